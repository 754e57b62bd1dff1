/*
 * serving._fastpath: the common recommendations answer in one C call.
 *
 * Why: a recommendations answer in Python cost about twice the no-op endpoint of the same server
 * (about 45 us more server CPU per request on the development machine), almost all of it
 * interpreter work spread over parsing, the binary search and the JSON assembly. This module does
 * exactly what serving.publication.Publication.user_answer does for the common request, with no
 * Python objects per item:
 *
 *   GET /v1/users/<id>/recommendations            (k = 10)
 *   GET /v1/users/<id>/recommendations?k=<digits>
 *
 * for a user the publication knows, when no blocklist applies. Anything else (another query
 * parameter, a k out of range, an id outside the id pattern, an unknown user) returns None, and
 * the caller answers through the Python path, which also writes the error bodies. Both paths
 * produce byte-identical bodies for the same request id; tests/serving/test_fastpath.py compares them.
 * The answer comes back with the user's position and the slate's length, so that the impression
 * log (serving/impressions/) can record the slate from the arrays without re-reading the body.
 *
 * The publication's arrays are borrowed through the buffer protocol once, in prepare(), which
 * also checks them (every slot's item row and reason code has its fragment) and builds a hash
 * table of the user ids (a binary search over a million ids cost a cache miss per step); the
 * capsule it returns keeps the views alive.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CAPSULE_NAME "serving._fastpath.tables"
#define MAX_ID_LENGTH 128 /* serving/ids.py MAX_ID_LENGTH (tests/serving/test_ids.py checks they agree) */
#define DEFAULT_K 10
#define SCORE_TEXT 32

typedef struct {
    Py_buffer user_ids;  /* fixed-width UCS4 (numpy str_), sorted */
    Py_buffer offsets;   /* int64, n_users + 1 */
    Py_buffer items;     /* int32 item row per slot */
    Py_buffer scores;    /* float32 per slot */
    Py_buffer reasons;   /* unsigned reason code per slot, reason_width bytes each */
    Py_ssize_t id_width; /* code points per user id */
    Py_ssize_t n_users;
    int reason_width;
    long top_n;
    Py_buffer item_json;      /* {"item_id":<id>,"score":  of every item row, back to back */
    Py_buffer item_offsets;   /* int64, n_items + 1: row r is item_json[offsets[r]:offsets[r + 1]] */
    Py_buffer reason_json;    /* ,"reason":<reason>}  of every reason code, back to back */
    Py_buffer reason_offsets; /* int64, n_reasons + 1 */
    PyObject *head;           /* bytes: ,"version":<v>,"fallback":false,"items": */
    int32_t *slots;           /* open-addressing hash table of user positions (-1 = empty) */
    size_t slot_mask;         /* table size - 1 (a power of two, at least twice the users) */
} Tables;

static void release_tables(PyObject *capsule) {
    Tables *t = (Tables *)PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (t == NULL) return;
    PyBuffer_Release(&t->user_ids);
    PyBuffer_Release(&t->offsets);
    PyBuffer_Release(&t->items);
    PyBuffer_Release(&t->scores);
    PyBuffer_Release(&t->reasons);
    PyBuffer_Release(&t->item_json);
    PyBuffer_Release(&t->item_offsets);
    PyBuffer_Release(&t->reason_json);
    PyBuffer_Release(&t->reason_offsets);
    Py_XDECREF(t->head);
    PyMem_Free(t->slots);
    PyMem_Free(t);
}

static int get_buffer(PyObject *array, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(array, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (itemsize > 0 && view->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte items", name, view->len, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* FNV-1a over an id's code points (the zero padding included, so every id hashes its full width). */
static uint64_t id_hash(const uint32_t *id, Py_ssize_t width) {
    uint64_t hash = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < width; i++) {
        hash ^= id[i];
        hash *= 1099511628211ULL;
    }
    return hash;
}

static int build_slots(Tables *t) {
    size_t size = 2;
    while (size < 2 * (size_t)t->n_users) size <<= 1;
    t->slots = PyMem_Malloc(size * sizeof(int32_t));
    if (t->slots == NULL) return -1;
    memset(t->slots, 0xff, size * sizeof(int32_t)); /* all -1 */
    t->slot_mask = size - 1;
    const uint32_t *ids = (const uint32_t *)t->user_ids.buf;
    for (Py_ssize_t user = 0; user < t->n_users; user++) {
        size_t slot = id_hash(ids + user * t->id_width, t->id_width) & t->slot_mask;
        while (t->slots[slot] >= 0) slot = (slot + 1) & t->slot_mask;
        t->slots[slot] = (int32_t)user;
    }
    return 0;
}

static uint32_t read_code(const Tables *t, Py_ssize_t slot) {
    const unsigned char *p = (const unsigned char *)t->reasons.buf + slot * t->reason_width;
    return t->reason_width == 1 ? p[0] : t->reason_width == 2 ? *(const uint16_t *)p : *(const uint32_t *)p;
}

/* True when offsets (int64) start at 0, never decrease and end at the blob's length. */
static int offsets_cover(const Py_buffer *offsets, const Py_buffer *blob) {
    const int64_t *o = (const int64_t *)offsets->buf;
    Py_ssize_t n = offsets->len / 8;
    if (n < 1 || o[0] != 0 || o[n - 1] != blob->len) return 0;
    for (Py_ssize_t i = 1; i < n; i++)
        if (o[i] < o[i - 1]) return 0;
    return 1;
}

/* prepare(user_ids, id_width, offsets, items, scores, reasons, reason_width,
 *         item_json, item_offsets, reason_json, reason_offsets, head, top_n) -> capsule */
static PyObject *prepare(PyObject *self, PyObject *args) {
    PyObject *user_ids, *offsets, *items, *scores, *reasons, *item_json, *item_offsets, *reason_json, *reason_offsets,
        *head;
    Py_ssize_t id_width;
    int reason_width;
    long top_n;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnOOOOiOOOOO!l", &user_ids, &id_width, &offsets, &items, &scores, &reasons,
                          &reason_width, &item_json, &item_offsets, &reason_json, &reason_offsets, &PyBytes_Type,
                          &head, &top_n))
        return NULL;
    if (id_width < 1 || id_width > MAX_ID_LENGTH || (reason_width != 1 && reason_width != 2 && reason_width != 4) ||
        top_n < 1) {
        PyErr_SetString(PyExc_ValueError, "id_width must be 1..128, top_n >= 1 and reason_width 1, 2 or 4");
        return NULL;
    }
    Tables *t = PyMem_Calloc(1, sizeof(Tables));
    if (t == NULL) return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(t, CAPSULE_NAME, release_tables);
    if (capsule == NULL) {
        PyMem_Free(t);
        return NULL;
    }
    /* From here the capsule owns t: release_tables frees whatever was acquired. */
    if (get_buffer(user_ids, &t->user_ids, 4 * id_width, "user_ids") < 0) goto fail;
    if (get_buffer(offsets, &t->offsets, 8, "offsets") < 0) goto fail;
    if (get_buffer(items, &t->items, 4, "items") < 0) goto fail;
    if (get_buffer(scores, &t->scores, 4, "scores") < 0) goto fail;
    if (get_buffer(reasons, &t->reasons, reason_width, "reasons") < 0) goto fail;
    if (get_buffer(item_json, &t->item_json, 0, "item_json") < 0) goto fail;
    if (get_buffer(item_offsets, &t->item_offsets, 8, "item_offsets") < 0) goto fail;
    if (get_buffer(reason_json, &t->reason_json, 0, "reason_json") < 0) goto fail;
    if (get_buffer(reason_offsets, &t->reason_offsets, 8, "reason_offsets") < 0) goto fail;
    Py_INCREF(head);
    t->head = head;
    t->id_width = id_width;
    t->n_users = t->user_ids.len / (4 * id_width);
    t->reason_width = reason_width;
    t->top_n = top_n;
    if (t->n_users > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "more than 2**31 - 1 users");
        goto fail;
    }
    Py_ssize_t slots = t->items.len / 4;
    const int64_t *list_offsets = (const int64_t *)t->offsets.buf;
    if (t->offsets.len / 8 != t->n_users + 1 || list_offsets[0] != 0 || list_offsets[t->n_users] != slots ||
        t->scores.len / 4 != slots || t->reasons.len / reason_width != slots) {
        PyErr_SetString(PyExc_ValueError, "offsets, items, scores and reasons do not describe the same lists");
        goto fail;
    }
    for (Py_ssize_t user = 0; user < t->n_users; user++) {
        if (list_offsets[user + 1] < list_offsets[user]) {
            PyErr_Format(PyExc_ValueError, "offsets decrease at user %zd", user);
            goto fail;
        }
    }
    if (!offsets_cover(&t->item_offsets, &t->item_json) || !offsets_cover(&t->reason_offsets, &t->reason_json)) {
        PyErr_SetString(PyExc_ValueError, "fragment offsets do not cover their fragments");
        goto fail;
    }
    /* Every stored item row and reason code must have its fragment: checked once, not per request. */
    const int32_t *rows = (const int32_t *)t->items.buf;
    Py_ssize_t n_items = t->item_offsets.len / 8 - 1, n_reasons = t->reason_offsets.len / 8 - 1;
    for (Py_ssize_t i = 0; i < slots; i++) {
        if (rows[i] < 0 || rows[i] >= n_items) {
            PyErr_Format(PyExc_ValueError, "slot %zd names item row %d outside 0..%zd", i, rows[i], n_items - 1);
            goto fail;
        }
        if ((Py_ssize_t)read_code(t, i) >= n_reasons) {
            PyErr_Format(PyExc_ValueError, "slot %zd has reason code %u without a fragment", i, read_code(t, i));
            goto fail;
        }
    }
    if (build_slots(t) < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    return capsule;
fail:
    Py_DECREF(capsule);
    return NULL;
}

/* table_bytes(tables) -> bytes of memory the fast path adds to the publication's arrays (its hash table). */
static PyObject *table_bytes(PyObject *self, PyObject *capsule) {
    (void)self;
    Tables *t = (Tables *)PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (t == NULL) return NULL;
    return PyLong_FromSize_t((t->slot_mask + 1) * sizeof(int32_t));
}

/* Exactly printf("%.6g", (double)value) for a finite float, without printf (a tenth of its cost).
 *
 * The value is m * 2^e exactly (m < 2^24). Its six significant digits are A / D rounded half to
 * even, with A = m * 10^max(p,0) * 2^max(e,0) and D = 10^max(-p,0) * 2^max(-e,0), p = 5 - decimal
 * exponent: exact integers in 128 bits for every value in [1e-10, 1e15). Outside that range (and
 * for zero) it asks snprintf. tests/test_serving_fastpath.py compares it with Python's b"%.6g".
 */
static int format_score(float value, char *out) {
    double magnitude = fabs((double)value);
    if (!(magnitude >= 1e-10 && magnitude < 1e15)) return snprintf(out, SCORE_TEXT, "%.6g", (double)value);
    int binary_exponent;
    double fraction = frexp(magnitude, &binary_exponent); /* magnitude = fraction * 2^binary_exponent, fraction in [0.5, 1) */
    unsigned __int128 m = (unsigned __int128)ldexp(fraction, 24);
    int e = binary_exponent - 24;
    static const uint64_t powers[16] = {1ULL,           10ULL,           100ULL,           1000ULL,
                                        10000ULL,       100000ULL,       1000000ULL,       10000000ULL,
                                        100000000ULL,   1000000000ULL,   10000000000ULL,   100000000000ULL,
                                        1000000000000ULL, 10000000000000ULL, 100000000000000ULL, 1000000000000000ULL};
    int exponent = (int)floor(log10(magnitude));
    unsigned __int128 quotient = 0, remainder = 0, denominator = 1;
    for (int attempt = 0; attempt < 3; attempt++) { /* log10 may miss by one next to a power of ten */
        int p = 5 - exponent;
        if (p > 15 || p < -15) return snprintf(out, SCORE_TEXT, "%.6g", (double)value);
        unsigned __int128 numerator = m;
        denominator = 1;
        if (p >= 0)
            numerator *= powers[p];
        else
            denominator *= powers[-p];
        if (e >= 0)
            numerator <<= e;
        else
            denominator <<= -e;
        quotient = numerator / denominator;
        remainder = numerator % denominator;
        if (quotient < 100000)
            exponent -= 1;
        else if (quotient >= 1000000)
            exponent += 1;
        else
            break;
    }
    if (quotient < 100000 || quotient >= 1000000) return snprintf(out, SCORE_TEXT, "%.6g", (double)value);
    if (2 * remainder > denominator || (2 * remainder == denominator && (quotient & 1))) quotient += 1;
    if (quotient == 1000000) {
        quotient = 100000;
        exponent += 1;
    }
    char digits[6];
    unsigned long n = (unsigned long)quotient;
    for (int i = 5; i >= 0; i--, n /= 10) digits[i] = (char)('0' + n % 10);
    int significant = 6; /* %g drops trailing zeros */
    while (significant > 1 && digits[significant - 1] == '0') significant--;
    char *start = out;
    if (value < 0) *out++ = '-';
    if (exponent >= -4 && exponent < 6) {
        if (exponent >= 0) {
            for (int i = 0; i <= exponent; i++) *out++ = digits[i];
            if (significant > exponent + 1) {
                *out++ = '.';
                for (int i = exponent + 1; i < significant; i++) *out++ = digits[i];
            }
        } else {
            *out++ = '0';
            *out++ = '.';
            for (int i = 0; i < -exponent - 1; i++) *out++ = '0';
            for (int i = 0; i < significant; i++) *out++ = digits[i];
        }
    } else {
        *out++ = digits[0];
        if (significant > 1) {
            *out++ = '.';
            for (int i = 1; i < significant; i++) *out++ = digits[i];
        }
        *out++ = 'e';
        *out++ = exponent < 0 ? '-' : '+';
        int shown = exponent < 0 ? -exponent : exponent;
        if (shown >= 100) *out++ = (char)('0' + shown / 100);
        *out++ = (char)('0' + shown / 10 % 10);
        *out++ = (char)('0' + shown % 10);
    }
    *out = '\0';
    return (int)(out - start);
}

/* format_score(value) -> bytes: the C formatter on its own, for tests. */
static PyObject *format_score_py(PyObject *self, PyObject *arg) {
    (void)self;
    double value = PyFloat_AsDouble(arg);
    if (value == -1.0 && PyErr_Occurred()) return NULL;
    if (!isfinite(value)) {
        PyErr_SetString(PyExc_ValueError, "format_score takes a finite number");
        return NULL;
    }
    char text[SCORE_TEXT];
    int length = format_score((float)value, text);
    return PyBytes_FromStringAndSize(text, length);
}

/* The id contract of serving/ids.py (ID_PATTERN: [A-Za-z0-9_.:-]{1,128}). */
static int is_id_char(Py_UCS4 c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == ':' || c == '-';
}

/* k from the raw query string: "" -> 10, "k=<1..9 digits>" -> the number; anything else -> -1 (Python path). */
static long parse_k(const char *query, Py_ssize_t length) {
    if (length == 0) return DEFAULT_K;
    if (length < 3 || length > 11 || query[0] != 'k' || query[1] != '=') return -1;
    long k = 0;
    for (Py_ssize_t i = 2; i < length; i++) {
        if (query[i] < '0' || query[i] > '9') return -1;
        k = k * 10 + (query[i] - '0');
    }
    return k;
}

/* The user's position, or -1: one hash probe sequence, then one comparison of the full (zero-padded) width. */
static Py_ssize_t find_user(const Tables *t, const uint32_t *key) {
    const uint32_t *ids = (const uint32_t *)t->user_ids.buf;
    size_t slot = id_hash(key, t->id_width) & t->slot_mask;
    for (;;) {
        int32_t user = t->slots[slot];
        if (user < 0) return -1;
        if (memcmp(ids + (Py_ssize_t)user * t->id_width, key, 4 * t->id_width) == 0) return user;
        slot = (slot + 1) & t->slot_mask;
    }
}

/* user_answer(tables, user_id, query_string, request_id) -> (bytes, position, count) | None */
static PyObject *user_answer(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "user_answer(tables, user_id, query_string, request_id)");
        return NULL;
    }
    Tables *t = (Tables *)PyCapsule_GetPointer(args[0], CAPSULE_NAME);
    if (t == NULL) return NULL;
    if (!PyUnicode_Check(args[1]) || !PyBytes_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "user_id must be str, query_string and request_id bytes");
        return NULL;
    }
    /* The request id is written unescaped: it must keep to the id alphabet (serving/impressions/request_ids.py). */
    const char *request_id = PyBytes_AS_STRING(args[3]);
    Py_ssize_t request_id_length = PyBytes_GET_SIZE(args[3]);
    if (request_id_length < 1 || request_id_length > MAX_ID_LENGTH) {
        PyErr_SetString(PyExc_ValueError, "request_id must be 1..128 bytes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < request_id_length; i++) {
        if (!is_id_char((unsigned char)request_id[i])) {
            PyErr_SetString(PyExc_ValueError, "request_id must keep to the id alphabet [A-Za-z0-9_.:-]");
            return NULL;
        }
    }
    long k = parse_k(PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]));
    if (k < 1 || k > t->top_n) Py_RETURN_NONE;

    PyObject *user = args[1];
    Py_ssize_t length = PyUnicode_GET_LENGTH(user);
    if (length < 1 || length > MAX_ID_LENGTH || length > t->id_width) Py_RETURN_NONE;
    uint32_t key[MAX_ID_LENGTH];
    memset(key, 0, 4 * t->id_width);
    int kind = PyUnicode_KIND(user);
    const void *data = PyUnicode_DATA(user);
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (!is_id_char(c)) Py_RETURN_NONE;
        key[i] = c;
    }
    Py_ssize_t position = find_user(t, key);
    if (position < 0) Py_RETURN_NONE;

    const int64_t *offsets = (const int64_t *)t->offsets.buf;
    Py_ssize_t start = offsets[position], end = offsets[position + 1];
    if (end - start > k) end = start + k;
    Py_ssize_t count = end - start;

    char (*score_text)[SCORE_TEXT] = count ? PyMem_Malloc(count * SCORE_TEXT) : NULL;
    int *score_length = count ? PyMem_Malloc(count * sizeof(int)) : NULL;
    if (count && (score_text == NULL || score_length == NULL)) {
        PyMem_Free(score_text);
        PyMem_Free(score_length);
        return PyErr_NoMemory();
    }
    const int32_t *rows = (const int32_t *)t->items.buf;
    const float *scores = (const float *)t->scores.buf;
    const int64_t *item_at = (const int64_t *)t->item_offsets.buf, *reason_at = (const int64_t *)t->reason_offsets.buf;
    const char *item_json = (const char *)t->item_json.buf, *reason_json = (const char *)t->reason_json.buf;
    /* {"user_id":"<id>","request_id":"<rid>"<head>[<items>]} ; neither id needs escaping (id alphabet). */
    Py_ssize_t size = 12 + length + 1 + 15 + request_id_length + 1 + PyBytes_GET_SIZE(t->head) + 3 +
                      (count > 1 ? count - 1 : 0);
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        double score = scores[start + i];
        if (!isfinite(score)) goto done; /* not JSON: let the Python path decide */
        /* 6 significant digits, as the Python path writes them (b"%.6g" % score); both round exactly. */
        score_length[i] = format_score(scores[start + i], score_text[i]);
        int32_t row = rows[start + i];
        uint32_t code = read_code(t, start + i);
        size += (item_at[row + 1] - item_at[row]) + score_length[i] + (reason_at[code + 1] - reason_at[code]);
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) goto done;
    char *out = PyBytes_AS_STRING(result);
#define PUT(source, n)              \
    do {                            \
        memcpy(out, (source), (n)); \
        out += (n);                 \
    } while (0)
    PUT("{\"user_id\":\"", 12);
    for (Py_ssize_t i = 0; i < length; i++) *out++ = (char)key[i];
    *out++ = '"';
    PUT(",\"request_id\":\"", 15);
    PUT(request_id, request_id_length);
    *out++ = '"';
    PUT(PyBytes_AS_STRING(t->head), PyBytes_GET_SIZE(t->head));
    *out++ = '[';
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i) *out++ = ',';
        int32_t row = rows[start + i];
        uint32_t code = read_code(t, start + i);
        PUT(item_json + item_at[row], item_at[row + 1] - item_at[row]);
        PUT(score_text[i], score_length[i]);
        PUT(reason_json + reason_at[code], reason_at[code + 1] - reason_at[code]);
    }
    *out++ = ']';
    *out++ = '}';
#undef PUT
    if (out - PyBytes_AS_STRING(result) != size) { /* a sizing bug must never send a torn body */
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "serving._fastpath: answer size mismatch");
    }
done:
    PyMem_Free(score_text);
    PyMem_Free(score_length);
    if (result == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    if (result == NULL) return NULL;
    PyObject *answer = Py_BuildValue("(Nnn)", result, position, count); /* N: the tuple takes the body */
    return answer;
}

static PyMethodDef methods[] = {
    {"prepare", prepare, METH_VARARGS, "Borrow a publication's arrays for user_answer; returns a capsule."},
    {"format_score", format_score_py, METH_O, "A float32 score as the answers write it (printf %.6g)."},
    {"table_bytes", table_bytes, METH_O, "Bytes of the fast path's own hash table of user ids."},
    {"user_answer", (PyCFunction)(void (*)(void))user_answer, METH_FASTCALL,
     "user_answer(tables, user_id, query_string, request_id) -> (body, user position, slate length), or None "
     "for the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "serving._fastpath", "The common recommendations answer in one C call.", -1, methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModule_Create(&module); }
