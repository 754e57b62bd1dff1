/* models._capped: the greedy capped order of models/lists/rules.py (capped_order), compiled.
 *
 * Publication puts every user's list through the category cap (and the seller cap, when the catalog
 * has sellers): in the first `head` slots no group of any cap may hold more than its limit. The rule
 * is a walk down the ranked list, keeping an item in the head while every one of its groups has
 * room and deferring it to just after the head otherwise. In Python that walk was a quarter of
 * publishing a million users; here it is a loop over small integer arrays, without the GIL.
 *
 * Same answer as rules.capped_order's Python path, row by row: `out` holds indices into the row
 * (kept positions, then deferred ones, then the rest in order; the slots after the row's valid
 * prefix, and a row whose head already fits, keep their own position). Valid slots (item >= 0) form
 * a prefix of each row, as in every candidate list. A group code < 0 is no group (never counted).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* groups: n_caps x n_items codes; sizes[c]: codes of cap c are < sizes[c]; counts: sum(sizes), zeroed. */
static int order_rows(const int64_t *ranked, Py_ssize_t n_rows, Py_ssize_t width, const int64_t *groups,
                      Py_ssize_t n_caps, Py_ssize_t n_items, const int64_t *sizes, const int64_t *limits,
                      Py_ssize_t head, int64_t *out, int64_t *counts, int64_t *kept, int64_t *deferred,
                      char *taken) {
    for (Py_ssize_t r = 0; r < n_rows; r++) {
        const int64_t *row = ranked + r * width;
        int64_t *order = out + r * width;
        Py_ssize_t n = 0;
        for (Py_ssize_t j = 0; j < width; j++) {
            order[j] = j;
            if (row[j] >= 0) n++;
            if (row[j] >= n_items) return -1;
        }
        if (n <= 1) continue;
        Py_ssize_t n_kept = 0, n_deferred = 0;
        for (Py_ssize_t p = 0; p < n && n_kept < head; p++) {
            int64_t item = row[p];
            int fits = 1;
            int64_t *base = counts;
            for (Py_ssize_t c = 0; c < n_caps; c++) {
                int64_t g = item < 0 ? -1 : groups[c * n_items + item];
                if (g >= sizes[c]) return -2;
                if (g >= 0 && base[g] >= limits[c]) {
                    fits = 0;
                    break;
                }
                base += sizes[c];
            }
            if (fits) {
                base = counts;
                for (Py_ssize_t c = 0; c < n_caps; c++) {
                    int64_t g = item < 0 ? -1 : groups[c * n_items + item];
                    if (g >= 0) base[g]++;
                    base += sizes[c];
                }
                kept[n_kept++] = p;
            } else {
                deferred[n_deferred++] = p;
            }
        }
        /* the counts back to zero: only the kept items' groups were counted */
        for (Py_ssize_t i = 0; i < n_kept; i++) {
            int64_t item = row[kept[i]];
            int64_t *base = counts;
            for (Py_ssize_t c = 0; c < n_caps; c++) {
                int64_t g = item < 0 ? -1 : groups[c * n_items + item];
                if (g >= 0) base[g] = 0;
                base += sizes[c];
            }
        }
        if (n_deferred == 0) continue; /* every walked position kept: the identity */
        memset(taken, 0, (size_t)n);
        Py_ssize_t at = 0;
        for (Py_ssize_t i = 0; i < n_kept; i++) {
            order[at++] = kept[i];
            taken[kept[i]] = 1;
        }
        for (Py_ssize_t i = 0; i < n_deferred; i++) {
            order[at++] = deferred[i];
            taken[deferred[i]] = 1;
        }
        for (Py_ssize_t p = 0; p < n; p++)
            if (!taken[p]) order[at++] = p;
    }
    return 0;
}

static int get_buffer(PyObject *object, Py_buffer *view, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "capped_order: %s must be a C-contiguous%s int64 buffer", what,
                     writable ? " writable" : "");
        return -1;
    }
    if (view->itemsize != sizeof(int64_t)) {
        PyErr_Format(PyExc_ValueError, "capped_order: %s must hold int64", what);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *capped_order_into(PyObject *self, PyObject *args) {
    PyObject *ranked_obj, *groups_obj, *sizes_obj, *limits_obj, *out_obj;
    Py_ssize_t n_rows, width, n_caps, n_items, head;
    if (!PyArg_ParseTuple(args, "OnnOnnOOnO", &ranked_obj, &n_rows, &width, &groups_obj, &n_caps, &n_items,
                          &sizes_obj, &limits_obj, &head, &out_obj))
        return NULL;
    if (n_rows < 0 || width < 0 || n_caps < 1 || n_items < 1 || head < 0) {
        PyErr_SetString(PyExc_ValueError, "capped_order: n_rows, width, head >= 0 and n_caps, n_items >= 1");
        return NULL;
    }
    Py_buffer ranked = {0}, groups = {0}, sizes = {0}, limits = {0}, out = {0};
    PyObject *result = NULL;
    int64_t *counts = NULL;
    char *taken = NULL;
    if (get_buffer(ranked_obj, &ranked, 0, "ranked") < 0) return NULL;
    if (get_buffer(groups_obj, &groups, 0, "groups") < 0) goto done;
    if (get_buffer(sizes_obj, &sizes, 0, "sizes") < 0) goto done;
    if (get_buffer(limits_obj, &limits, 0, "limits") < 0) goto done;
    if (get_buffer(out_obj, &out, 1, "out") < 0) goto done;
    if (ranked.len != (Py_ssize_t)(n_rows * width * sizeof(int64_t)) || out.len != ranked.len ||
        groups.len != (Py_ssize_t)(n_caps * n_items * sizeof(int64_t)) ||
        sizes.len != (Py_ssize_t)(n_caps * sizeof(int64_t)) || limits.len != sizes.len) {
        PyErr_SetString(PyExc_ValueError, "capped_order: buffer sizes do not match ranked and out (n_rows x width), "
                                          "groups (n_caps x n_items), sizes and limits (n_caps)");
        goto done;
    }
    const int64_t *size_of = (const int64_t *)sizes.buf;
    const int64_t *codes = (const int64_t *)groups.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t c = 0; c < n_caps; c++) {
        if (size_of[c] < 1) {
            PyErr_SetString(PyExc_ValueError, "capped_order: every cap needs a group count >= 1");
            goto done;
        }
        total += size_of[c];
    }
    counts = PyMem_RawCalloc((size_t)total + 2 * (size_t)(width + 1), sizeof(int64_t));
    taken = PyMem_RawMalloc((size_t)width + 1);
    if (counts == NULL || taken == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = order_rows((const int64_t *)ranked.buf, n_rows, width, codes, n_caps, n_items, size_of,
                        (const int64_t *)limits.buf, head, (int64_t *)out.buf, counts, counts + total,
                        counts + total + width + 1, taken);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_SetString(PyExc_ValueError, failed == -1 ? "capped_order: an item index is not below n_items"
                                                       : "capped_order: a group code is not below its cap's group count");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(counts);
    PyMem_RawFree(taken);
    PyBuffer_Release(&ranked);
    if (groups.obj) PyBuffer_Release(&groups);
    if (sizes.obj) PyBuffer_Release(&sizes);
    if (limits.obj) PyBuffer_Release(&limits);
    if (out.obj) PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"capped_order_into", capped_order_into, METH_VARARGS,
     "capped_order_into(ranked, n_rows, width, groups, n_caps, n_items, sizes, limits, head, out): "
     "the greedy capped slot order of each row, GIL released"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "models._capped", NULL, -1, methods};

PyMODINIT_FUNC PyInit__capped(void) { return PyModule_Create(&module); }
