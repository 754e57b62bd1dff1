/* models._topk: exact per-row top-k of a float32 score block in one pass, without the GIL.
 *
 * Publication scores every user against every item: at a million users and 100,000 items the
 * selection of each row's best k scores costs more than the matrix product that made them when
 * done with numpy (models/base.py top_k: chunk maxima, a partition, a sort of the candidates).
 * Here each row is read once for its maxima per chunk of columns (four at a time, SSE); the k-th
 * largest of those bounds the row's k-th best from below, so only the chunks reaching it (about k)
 * are offered to a k-slot min-heap. A chunk is 64 columns, narrower when a row holds fewer than
 * MIN_CHUNKS_PER_K chunks per slot: with fewer chunks than k the bound is -inf and every score goes
 * through the heap (a row of 6,000 scores and k = 150 cost 14x a row of 100,000 per score).
 *
 * Same answer as models.base.top_k's numpy path: per row the k largest scores among the allowed
 * columns (a float32 penalty per column: 0 allowed, -inf not), best first, equal scores by column; NaN and -inf are never selected; slots beyond a
 * row's selectable scores hold column -1 and score -inf. The caller owns the output buffers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    float score;
    int64_t col;
} slot;

/* a is worse than b: a lower score, or the same score at a later column */
static inline int worse(const slot *a, const slot *b) {
    return a->score < b->score || (a->score == b->score && a->col > b->col);
}

static void sift_down(slot *heap, Py_ssize_t n, Py_ssize_t i) {
    for (;;) {
        Py_ssize_t left = 2 * i + 1, right = left + 1, least = i;
        if (left < n && worse(&heap[left], &heap[least])) least = left;
        if (right < n && worse(&heap[right], &heap[least])) least = right;
        if (least == i) return;
        slot t = heap[i];
        heap[i] = heap[least];
        heap[least] = t;
        i = least;
    }
}

static void sift_up(slot *heap, Py_ssize_t i) {
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!worse(&heap[i], &heap[parent])) return;
        slot t = heap[i];
        heap[i] = heap[parent];
        heap[parent] = t;
        i = parent;
    }
}

#define WIDTH 64 /* widest chunk: chunk maxima first, then only the chunks that can hold a winner */
#define MIN_CHUNKS_PER_K 8 /* narrower chunks (down to 4 columns) until a row holds this many per slot */

/* Columns per chunk for rows of n_cols scores and k slots: a multiple of 4 in [4, WIDTH]. */
static Py_ssize_t chunk_width(Py_ssize_t n_cols, Py_ssize_t k) {
    Py_ssize_t width = n_cols / (MIN_CHUNKS_PER_K * k) / 4 * 4;
    return width < 4 ? 4 : (width > WIDTH ? WIDTH : width);
}

/* Offer column c's score s to the heap of `*size` slots (at most k); s is already known to be selectable. */
static inline void offer(slot *heap, Py_ssize_t *size, Py_ssize_t k, float s, Py_ssize_t c) {
    if (*size == k) {
        /* columns come in increasing order: an equal score is worse than anything held */
        if (!(s > heap[0].score)) return;
        heap[0].score = s;
        heap[0].col = c;
        sift_down(heap, k, 0);
    } else {
        heap[*size].score = s;
        heap[*size].col = c;
        sift_up(heap, *size);
        (*size)++;
    }
}

/* The k-th largest of values[0..n) (k <= n), by quickselect; reorders values. */
static float kth_largest(float *values, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        float pivot = values[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (values[i] > pivot) i++;
            while (values[j] < pivot) j--;
            if (i <= j) {
                float t = values[i];
                values[i] = values[j];
                values[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            return values[target];
    }
    return values[target];
}

/* Largest selectable score of row[from..to) (penalty -inf: not allowed; NaN never wins), or -inf. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
static inline float chunk_max(const float *row, const float *penalty, Py_ssize_t from, Py_ssize_t to) {
    __m128 best = _mm_set1_ps(-INFINITY);
    Py_ssize_t c = from;
    /* maxps returns its second operand when the first is NaN: a NaN score leaves `best` as it was */
    if (penalty)
        for (; c + 4 <= to; c += 4)
            best = _mm_max_ps(_mm_add_ps(_mm_loadu_ps(row + c), _mm_loadu_ps(penalty + c)), best);
    else
        for (; c + 4 <= to; c += 4) best = _mm_max_ps(_mm_loadu_ps(row + c), best);
    float lanes[4], m;
    _mm_storeu_ps(lanes, best);
    m = lanes[0] > lanes[1] ? lanes[0] : lanes[1];
    m = lanes[2] > m ? lanes[2] : m;
    m = lanes[3] > m ? lanes[3] : m;
    for (; c < to; c++) {
        float s = penalty ? row[c] + penalty[c] : row[c];
        m = s > m ? s : m;
    }
    return m;
}
#else
static inline float chunk_max(const float *row, const float *penalty, Py_ssize_t from, Py_ssize_t to) {
    float m = -INFINITY;
    for (Py_ssize_t c = from; c < to; c++) {
        float s = penalty ? row[c] + penalty[c] : row[c];
        m = s > m ? s : m; /* NaN never compares greater */
    }
    return m;
}
#endif

static void select_rows(const float *scores, Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t k,
                        const float *penalty, int64_t *out_items, float *out_scores, slot *heap,
                        float *maxima, float *scratch, Py_ssize_t width) {
    Py_ssize_t n_chunks = (n_cols + width - 1) / width;
    for (Py_ssize_t r = 0; r < n_rows; r++) {
        const float *row = scores + r * n_cols;
        Py_ssize_t size = 0, with_scores = 0;
        for (Py_ssize_t j = 0; j < n_chunks; j++) {
            Py_ssize_t to = (j + 1) * width < n_cols ? (j + 1) * width : n_cols;
            maxima[j] = chunk_max(row, penalty, j * width, to);
            if (maxima[j] > -INFINITY) scratch[with_scores++] = maxima[j];
        }
        /* k chunks hold a score at least this high, so the row's k-th best is not below it (-inf:
           fewer than k chunks hold any score, and every selectable score is a candidate) */
        float bar = with_scores >= k ? kth_largest(scratch, with_scores, k) : -INFINITY;
        for (Py_ssize_t j = 0; j < n_chunks; j++) {
            if (!(maxima[j] >= bar) || !(maxima[j] > -INFINITY)) continue;
            Py_ssize_t to = (j + 1) * width < n_cols ? (j + 1) * width : n_cols;
            for (Py_ssize_t c = j * width; c < to; c++) {
                float s = row[c];
                if (s >= bar && s > -INFINITY && (!penalty || penalty[c] == 0.0f)) offer(heap, &size, k, s, c);
            }
        }
        /* heap sort: repeatedly move the worst to the end, leaving the best first */
        for (Py_ssize_t n = size; n > 1; n--) {
            slot t = heap[0];
            heap[0] = heap[n - 1];
            heap[n - 1] = t;
            sift_down(heap, n - 1, 0);
        }
        int64_t *items = out_items + r * k;
        float *top = out_scores + r * k;
        for (Py_ssize_t i = 0; i < k; i++) {
            if (i < size) {
                items[i] = heap[i].col;
                top[i] = heap[i].score;
            } else {
                items[i] = -1;
                top[i] = -INFINITY;
            }
        }
    }
}

static int get_buffer(PyObject *object, Py_buffer *view, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "top_k: %s must be a C-contiguous%s buffer", what,
                     writable ? " writable" : "");
        return -1;
    }
    return 0;
}

static PyObject *top_k_into(PyObject *self, PyObject *args) {
    PyObject *scores_obj, *allowed_obj, *items_obj, *out_scores_obj;
    Py_ssize_t n_rows, n_cols, k;
    if (!PyArg_ParseTuple(args, "OnnnOOO", &scores_obj, &n_rows, &n_cols, &k, &allowed_obj, &items_obj,
                          &out_scores_obj))
        return NULL;
    if (n_rows < 0 || n_cols < 0 || k < 1) {
        PyErr_SetString(PyExc_ValueError, "top_k: n_rows and n_cols must be >= 0 and k >= 1");
        return NULL;
    }
    Py_buffer scores = {0}, allowed = {0}, items = {0}, out_scores = {0};
    PyObject *result = NULL;
    slot *heap = NULL;
    if (get_buffer(scores_obj, &scores, 0, "scores") < 0) return NULL;
    if (allowed_obj != Py_None && get_buffer(allowed_obj, &allowed, 0, "penalty") < 0) goto done;
    if (get_buffer(items_obj, &items, 1, "items") < 0) goto done;
    if (get_buffer(out_scores_obj, &out_scores, 1, "out_scores") < 0) goto done;
    if (scores.len != (Py_ssize_t)(n_rows * n_cols * sizeof(float)) || scores.itemsize != sizeof(float) ||
        (allowed_obj != Py_None && (allowed.len != (Py_ssize_t)(n_cols * sizeof(float)) || allowed.itemsize != sizeof(float))) ||
        items.len != (Py_ssize_t)(n_rows * k * sizeof(int64_t)) || items.itemsize != sizeof(int64_t) ||
        out_scores.len != (Py_ssize_t)(n_rows * k * sizeof(float)) || out_scores.itemsize != sizeof(float)) {
        PyErr_SetString(PyExc_ValueError,
                        "top_k: buffer sizes do not match float32 scores (n_rows x n_cols), a float32 penalty "
                        "(n_cols: 0 allowed, -inf not), int64 items and float32 scores (n_rows x k)");
        goto done;
    }
    Py_ssize_t width = chunk_width(n_cols, k), n_chunks = (n_cols + width - 1) / width;
    heap = PyMem_RawMalloc(sizeof(slot) * (size_t)k + 2 * sizeof(float) * (size_t)(n_chunks + 1));
    if (heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    select_rows((const float *)scores.buf, n_rows, n_cols, k,
                allowed_obj != Py_None ? (const float *)allowed.buf : NULL, (int64_t *)items.buf,
                (float *)out_scores.buf, heap, (float *)(heap + k), (float *)(heap + k) + n_chunks + 1, width);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(heap);
    PyBuffer_Release(&scores);
    if (allowed.obj) PyBuffer_Release(&allowed);
    if (items.obj) PyBuffer_Release(&items);
    if (out_scores.obj) PyBuffer_Release(&out_scores);
    return result;
}

static PyMethodDef methods[] = {
    {"top_k_into", top_k_into, METH_VARARGS,
     "top_k_into(scores, n_rows, n_cols, k, penalty_or_None, items_out, scores_out): per-row top-k, GIL released"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "models._topk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__topk(void) { return PyModule_Create(&module); }
