/* pipelines.ingest._jsonl: the usual JSONL event line split into the contract's fields, without a JSON library.
 *
 * Staging a landing file in DuckDB (sql/stage_jsonl.sql) parses every line three times (json_valid,
 * json_transform, json_keys) and then works on each field's text: about a third of an ingest. Nearly
 * every line is the same simple shape: one flat object holding only the contract's keys, each once, its
 * ids and times plain strings, `value` a number or null, `context` an object. This pass recognises that
 * shape and copies the fields out (strings between their quotes, `value`'s number as written, `context`
 * minified as DuckDB's json_transform writes it); a line it does not fully recognise is left to the SQL,
 * which gives every line its outcome. So the two paths must agree on every line this one takes, which
 * is why it takes so little: no backslash anywhere in the line (no escapes to decode), no key outside
 * the contract and none twice, no float or exponent inside `context` and no exponent or negative zero in
 * `value` (json_transform rewrites those), no trailing comma, NaN or Infinity (DuckDB's reader accepts
 * them), nothing after the closing brace but whitespace. tests/ingest/test_jsonl_fastpath.py holds both
 * paths to the same rows on the landing files and on a file of hostile lines.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define N_FIELDS 8
#define F_VALUE 5
#define F_CONTEXT 7
#define MAX_DEPTH 32
#define MAX_NUMBER_CHARS 24  /* `value`: longer numbers are left to the SQL */
#define MAX_INTEGER_CHARS 18 /* an integer inside `context`: fits an int64, so json_transform writes it back as is */

static const char *FIELD_NAMES[N_FIELDS] = {"event_id", "user_id",  "item_id",    "event_type",
                                            "event_ts", "value",    "session_id", "context"};

typedef struct {
    int32_t *offsets; /* n + 1 */
    char *data;       /* at most the chunk's bytes */
    uint8_t *valid;   /* n: 1 = the field has a value */
    int32_t used;
} Field;

static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* A string without escapes or control characters: returns the closing quote, or NULL. */
static inline const char *scan_string(const char *p, const char *end) {
    /* p is just past the opening quote */
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p;
        if (c < 0x20) return NULL; /* a backslash was excluded for the whole line */
        p++;
    }
    return NULL;
}

/* A JSON number json_transform writes back as it is read: returns its end, or NULL.
 * `fraction`: whether digits after a point are allowed (value: yes; numbers inside context: no). */
static const char *scan_number(const char *p, const char *end, int fraction) {
    const char *start = p;
    if (p < end && *p == '-') {
        p++;
        if (p < end && *p == '0') return NULL; /* -0 and -0.x: written back without the sign or reformatted */
    }
    if (p >= end || *p < '0' || *p > '9') return NULL;
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && *p == '.') {
        if (!fraction) return NULL;
        p++;
        if (p >= end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) return NULL;
    if (p - start > (fraction ? MAX_NUMBER_CHARS : MAX_INTEGER_CHARS)) return NULL;
    return p;
}

/* One value inside `context`, copied minified to *out: returns the end of the value, or NULL. */
static const char *copy_value(const char *p, const char *end, char **out, int depth) {
    if (p >= end || depth > MAX_DEPTH) return NULL;
    char c = *p;
    if (c == '"') {
        const char *close = scan_string(p + 1, end);
        if (!close) return NULL;
        memcpy(*out, p, (size_t)(close + 1 - p));
        *out += close + 1 - p;
        return close + 1;
    }
    if (c == '{' || c == '[') {
        char closing = c == '{' ? '}' : ']';
        *(*out)++ = c;
        p = skip_ws(p + 1, end);
        if (p < end && *p == closing) {
            *(*out)++ = closing;
            return p + 1;
        }
        for (;;) {
            if (c == '{') {
                if (p >= end || *p != '"') return NULL;
                const char *close = scan_string(p + 1, end);
                if (!close) return NULL;
                memcpy(*out, p, (size_t)(close + 1 - p));
                *out += close + 1 - p;
                p = skip_ws(close + 1, end);
                if (p >= end || *p != ':') return NULL;
                *(*out)++ = ':';
                p = skip_ws(p + 1, end);
            }
            p = copy_value(p, end, out, depth + 1);
            if (!p) return NULL;
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                *(*out)++ = ',';
                p = skip_ws(p + 1, end);
                if (p < end && *p == closing) return NULL; /* a trailing comma: DuckDB's rules, not ours */
                continue;
            }
            if (p < end && *p == closing) {
                *(*out)++ = closing;
                return p + 1;
            }
            return NULL;
        }
    }
    if (c == 't' && end - p >= 4 && memcmp(p, "true", 4) == 0) {
        memcpy(*out, "true", 4);
        *out += 4;
        return p + 4;
    }
    if (c == 'f' && end - p >= 5 && memcmp(p, "false", 5) == 0) {
        memcpy(*out, "false", 5);
        *out += 5;
        return p + 5;
    }
    if (c == 'n' && end - p >= 4 && memcmp(p, "null", 4) == 0) {
        memcpy(*out, "null", 4);
        *out += 4;
        return p + 4;
    }
    const char *stop = scan_number(p, end, 0);
    if (!stop) return NULL;
    memcpy(*out, p, (size_t)(stop - p));
    *out += stop - p;
    return stop;
}

static int field_of(const char *key, Py_ssize_t length) {
    for (int f = 0; f < N_FIELDS; f++) {
        if ((Py_ssize_t)strlen(FIELD_NAMES[f]) == length && memcmp(FIELD_NAMES[f], key, (size_t)length) == 0) return f;
    }
    return -1;
}

/* One line: 1 and its fields written (each field's data appended at fields[f].used), or 0 (left to the SQL). */
static int split_line(const char *p, const char *end, Field *fields, Py_ssize_t row) {
    int32_t start[N_FIELDS], length[N_FIELDS];
    int seen = 0;
    if (memchr(p, '\\', (size_t)(end - p))) return 0;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (p >= end || *p != '"') return 0;
            const char *close = scan_string(p + 1, end);
            if (!close) return 0;
            int f = field_of(p + 1, close - p - 1);
            if (f < 0 || (seen & (1 << f))) return 0; /* a key outside the contract, or one twice */
            p = skip_ws(close + 1, end);
            if (p >= end || *p != ':') return 0;
            p = skip_ws(p + 1, end);
            if (p >= end) return 0;
            Field *field = &fields[f];
            char *out = field->data + field->used;
            if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
                p += 4;
                start[f] = -1;
            } else if (f == F_CONTEXT) {
                if (*p != '{') return 0;
                char *begin = out;
                p = copy_value(p, end, &out, 0);
                if (!p) return 0;
                start[f] = field->used;
                length[f] = (int32_t)(out - begin);
            } else if (f == F_VALUE) {
                const char *stop = scan_number(p, end, 1);
                if (!stop) return 0;
                memcpy(out, p, (size_t)(stop - p));
                start[f] = field->used;
                length[f] = (int32_t)(stop - p);
                p = stop;
            } else {
                if (*p != '"') return 0;
                const char *text_end = scan_string(p + 1, end);
                if (!text_end) return 0;
                memcpy(out, p + 1, (size_t)(text_end - p - 1));
                start[f] = field->used;
                length[f] = (int32_t)(text_end - p - 1);
                p = text_end + 1;
            }
            seen |= 1 << f;
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return 0;
        }
    }
    if (skip_ws(p, end) != end) return 0;
    /* The line is taken: commit its fields (a field it lacks, or that is null, has no value). */
    for (int f = 0; f < N_FIELDS; f++) {
        Field *field = &fields[f];
        if ((seen & (1 << f)) && start[f] >= 0) {
            field->used += length[f];
            field->valid[row] = 1;
        }
        field->offsets[row + 1] = field->used;
    }
    return 1;
}

static PyObject *split_events(PyObject *self, PyObject *args) {
    Py_buffer data, offsets;
    Py_ssize_t first, n;
    if (!PyArg_ParseTuple(args, "y*y*nn", &data, &offsets, &first, &n)) return NULL;
    PyObject *result = NULL;
    PyObject *taken = NULL, *field_bytes[N_FIELDS][3] = {{NULL}};
    const int32_t *line_offsets = (const int32_t *)offsets.buf;
    if (first < 0 || n < 0 || offsets.len < (first + n + 1) * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer shorter than first + n + 1 int32 values");
        goto done;
    }
    int32_t lo = line_offsets[first], hi = line_offsets[first + n];
    if (lo < 0 || hi < lo || hi > data.len) {
        PyErr_SetString(PyExc_ValueError, "line offsets outside the data buffer");
        goto done;
    }
    for (Py_ssize_t r = first; r < first + n; r++) {
        if (line_offsets[r + 1] < line_offsets[r]) {
            PyErr_SetString(PyExc_ValueError, "line offsets not in order");
            goto done;
        }
    }
    taken = PyBytes_FromStringAndSize(NULL, n);
    if (!taken) goto done;
    Field fields[N_FIELDS];
    for (int f = 0; f < N_FIELDS; f++) {
        field_bytes[f][0] = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int32_t));
        field_bytes[f][1] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(hi - lo) + 1);
        field_bytes[f][2] = PyBytes_FromStringAndSize(NULL, n + 1);
        if (!field_bytes[f][0] || !field_bytes[f][1] || !field_bytes[f][2]) goto done;
        fields[f].offsets = (int32_t *)PyBytes_AS_STRING(field_bytes[f][0]);
        fields[f].data = PyBytes_AS_STRING(field_bytes[f][1]);
        fields[f].valid = (uint8_t *)PyBytes_AS_STRING(field_bytes[f][2]);
        fields[f].used = 0;
        fields[f].offsets[0] = 0;
        memset(fields[f].valid, 0, (size_t)n + 1);
    }
    char *taken_rows = PyBytes_AS_STRING(taken);
    const char *text = (const char *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++) {
        const char *line = text + line_offsets[first + r], *line_end = text + line_offsets[first + r + 1];
        taken_rows[r] = (char)split_line(line, line_end, fields, r);
        if (!taken_rows[r]) {
            for (int f = 0; f < N_FIELDS; f++) fields[f].offsets[r + 1] = fields[f].used;
        }
    }
    Py_END_ALLOW_THREADS
    /* Each data buffer was sized for the whole chunk; keep only what the field used. The buffers of every
     * chunk of a file stay alive until the file is staged, and at a million users a day has ~800 chunks:
     * unshrunk, eight chunk-sized buffers each held gigabytes of (recycled, resident) heap. */
    for (int f = 0; f < N_FIELDS; f++) {
        if (_PyBytes_Resize(&field_bytes[f][1], (Py_ssize_t)fields[f].used + 1) < 0) goto done;
    }
    result = PyTuple_New(N_FIELDS + 1);
    if (!result) goto done;
    PyTuple_SET_ITEM(result, 0, taken);
    taken = NULL;
    for (int f = 0; f < N_FIELDS; f++) {
        PyObject *triple = Py_BuildValue("(OOO)", field_bytes[f][0], field_bytes[f][1], field_bytes[f][2]);
        if (!triple) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, f + 1, triple);
    }
done:
    Py_XDECREF(taken);
    for (int f = 0; f < N_FIELDS; f++) {
        for (int k = 0; k < 3; k++) Py_XDECREF(field_bytes[f][k]);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"split_events", split_events, METH_VARARGS,
     "split_events(data, offsets, first, n) -> (taken, (offsets, data, valid) for each of the 8 fields).\n\n"
     "data and offsets are an Arrow string array's buffers (int32 offsets); rows first .. first + n - 1.\n"
     "taken[r] is 1 where line r was split here, 0 where it is left to the SQL staging. Each field's\n"
     "offsets (n + 1 int32), data and valid (one byte per row, 1 = a value) form an Arrow string array."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jsonl",
                                    "The usual JSONL event line split into its fields (see the C source).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__jsonl(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    /* The field order of the result, checked against serving.events.EVENT_FIELDS where it is imported. */
    PyObject *names = PyTuple_New(N_FIELDS);
    if (!names) {
        Py_DECREF(m);
        return NULL;
    }
    for (int f = 0; f < N_FIELDS; f++) PyTuple_SET_ITEM(names, f, PyUnicode_FromString(FIELD_NAMES[f]));
    if (PyModule_AddObject(m, "FIELDS", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
