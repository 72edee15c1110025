/* prep._kernels: exact per-channel histograms and cross sums of 8-bit pixels, in one pass.
 *
 * The one native part of prep, and an optional one: setup.py builds it when a C compiler is
 * there, and prep.kernels falls back to PIL and torch when it is not. Every function reads
 * pixels it is given and writes only the integer counters it is given; the Python side
 * (prep/kernels.py) checks shapes and types and calls them through ctypes, without the GIL.
 *
 * All sums are exact: histograms count in uint32 blocks folded into int64, and cross sums of
 * 8-bit values add at most 65,536 products (each below 2**16) in uint32 before folding into
 * uint64.
 */
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LEVELS 256
#define BLOCK 65536 /* pixels per uint32 block: 65536 * 255 * 255 < 2**32 */

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT __attribute__((visibility("default")))
#endif

/* The cross sums vectorize only with SSSE3 or later (de-interleaving RGB, widening multiplies);
 * where the compiler and loader support it, build them for AVX2 and SSE4.2 too and let the
 * CPU pick at load time, so one build runs everywhere. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__linux__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "sse4.2", "default")))
#else
#define CLONES
#endif

/* Histograms of `channels` (1..4) interleaved 8-bit channels of `pixels` pixels (HWC order):
 * hist[c * 256 + v] += count of value v in channel c. Four partial tables per channel break
 * the store-to-load dependency of repeated values. */
EXPORT void prep_histogram_interleaved(const uint8_t *p, size_t pixels, int channels, int64_t *hist) {
    uint32_t part[4][4][LEVELS];
    size_t done = 0;
    while (done < pixels) {
        size_t n = pixels - done < BLOCK ? pixels - done : BLOCK;
        memset(part, 0, sizeof part);
        const uint8_t *q = p + done * (size_t)channels;
        size_t i = 0;
        if (channels == 3) {
            for (; i + 4 <= n; i += 4, q += 12) {
                part[0][0][q[0]]++; part[0][1][q[1]]++; part[0][2][q[2]]++;
                part[1][0][q[3]]++; part[1][1][q[4]]++; part[1][2][q[5]]++;
                part[2][0][q[6]]++; part[2][1][q[7]]++; part[2][2][q[8]]++;
                part[3][0][q[9]]++; part[3][1][q[10]]++; part[3][2][q[11]]++;
            }
        } else if (channels == 1) {
            for (; i + 4 <= n; i += 4, q += 4) {
                part[0][0][q[0]]++; part[1][0][q[1]]++; part[2][0][q[2]]++; part[3][0][q[3]]++;
            }
        }
        for (; i < n; i++, q += channels)
            for (int c = 0; c < channels; c++) part[0][c][q[c]]++;
        for (int c = 0; c < channels; c++)
            for (int v = 0; v < LEVELS; v++)
                hist[c * LEVELS + v] += (int64_t)part[0][c][v] + part[1][c][v] + part[2][c][v] + part[3][c][v];
        done += n;
    }
}

/* Raw cross sums of 3 interleaved 8-bit channels: out[0] += sum(x0 x1), out[1] += sum(x0 x2),
 * out[2] += sum(x1 x2). */
CLONES EXPORT void prep_cross_interleaved3(const uint8_t *p, size_t pixels, uint64_t *out) {
    size_t done = 0;
    while (done < pixels) {
        size_t n = pixels - done < BLOCK ? pixels - done : BLOCK;
        const uint8_t *q = p + done * 3;
        uint32_t a = 0, b = 0, c = 0;
        for (size_t i = 0; i < n; i++, q += 3) {
            a += (uint32_t)q[0] * q[1];
            b += (uint32_t)q[0] * q[2];
            c += (uint32_t)q[1] * q[2];
        }
        out[0] += a;
        out[1] += b;
        out[2] += c;
        done += n;
    }
}

static inline uint64_t plane_dot(const uint8_t *x, const uint8_t *y, size_t length) {
    uint64_t total = 0;
    size_t done = 0;
    while (done < length) {
        size_t n = length - done < BLOCK ? length - done : BLOCK;
        uint32_t s = 0;
        for (size_t i = 0; i < n; i++) s += (uint32_t)x[done + i] * y[done + i];
        total += s;
        done += n;
    }
    return total;
}

/* Raw cross sums of a uint8 batch (images, channels, length) in planes, summed over the batch:
 * out[i * channels + j] += sum over images and pixels of x_i x_j, for i < j (the caller has
 * the diagonal, the sums of squares, already). */
CLONES EXPORT void prep_cross_batch(const uint8_t *p, size_t images, int channels, size_t length, uint64_t *out) {
    for (size_t n = 0; n < images; n++) {
        const uint8_t *image = p + n * (size_t)channels * length;
        for (int i = 0; i < channels; i++)
            for (int j = i + 1; j < channels; j++)
                out[i * channels + j] += plane_dot(image + (size_t)i * length, image + (size_t)j * length, length);
    }
}

/* 16-bit data in planes (images, channels, length), uint16 or int16 (`is_signed`): per channel
 * the 65,536-bin histogram of value - offset (hist[c * 65536 + key], int64, added to), and per
 * image and channel the count, sum and sum of squares of the values that are not the channel's
 * nodata key (nodata[c], or -1 for none): valid[n * C + c], sums[...] (int64) and squares[...]
 * (uint64: a 16-bit square is below 2**32, so 2**32 of them fit). The nodata key is counted in
 * the histogram; the caller removes its bin. One read of the data gives all of it. */
CLONES EXPORT void prep_wide_planes(const uint16_t *p, size_t images, int channels, size_t length, int is_signed,
                                    const int32_t *nodata, int64_t *hist, int64_t *valid, int64_t *sums,
                                    uint64_t *squares, int32_t *kmin, int32_t *kmax) {
    const uint16_t flip = is_signed ? 0x8000u : 0u; /* int16 bits -> key = value + 32768 */
    const int64_t offset = is_signed ? -32768 : 0;
    for (size_t n = 0; n < images; n++) {
        for (int c = 0; c < channels; c++) {
            const uint16_t *plane = p + (n * (size_t)channels + (size_t)c) * length;
            int64_t *h = hist + (size_t)c * 65536;
            int64_t skip_key = nodata[c];
            uint64_t s = 0, q = 0; /* of the keys: sums of key (< 2**16) and key**2 (< 2**32) */
            for (size_t i = 0; i < length; i++) {
                uint32_t key = (uint32_t)(uint16_t)(plane[i] ^ flip);
                h[key]++;
                s += key;
                q += (uint64_t)key * key;
            }
            size_t count = length;
            if (skip_key >= 0) { /* the nodata key's pixels, taken back out of the sums */
                size_t seen = 0;
                for (size_t i = 0; i < length; i++) seen += (uint16_t)(plane[i] ^ flip) == (uint16_t)skip_key;
                count -= seen;
                s -= (uint64_t)skip_key * seen;
                q -= (uint64_t)skip_key * (uint64_t)skip_key * seen;
            }
            /* the plane's lowest and highest key but the nodata key: from the histogram's ends is
             * not possible here (it holds earlier images too), so one more read of the plane */
            int32_t lo = kmin[c], hi = kmax[c];
            for (size_t i = 0; i < length; i++) {
                int32_t key = (int32_t)(uint16_t)(plane[i] ^ flip);
                if (key == skip_key) continue;
                lo = key < lo ? key : lo;
                hi = key > hi ? key : hi;
            }
            kmin[c] = lo;
            kmax[c] = hi;
            /* back from keys to values v = key + offset: sum v = s + n offset, sum v**2 = q + 2 offset s + n offset**2 */
            int64_t n_valid = (int64_t)count;
            int64_t sum_v = (int64_t)s + n_valid * offset;
            uint64_t sq_v = q + (uint64_t)(2 * offset) * s + (uint64_t)(n_valid * offset * offset);
            size_t at = n * (size_t)channels + (size_t)c;
            valid[at] = n_valid;
            sums[at] = sum_v;
            squares[at] = sq_v;
        }
    }
}

/* Raw cross sums of an int16 batch (images, channels, length) in planes, summed over the batch:
 * out[i * channels + j] += sum of x_i x_j, for i < j. A product of two int16 values lies within
 * 2**30 in magnitude and an int64 holds 2**33 of them, so they are summed in int64 directly:
 * the compiler widens the products and vectorizes the int64 sums. (uint16 data is passed as
 * int16 keys x - 32768; the caller corrects the sums exactly.) */
CLONES EXPORT void prep_cross_planes16(const int16_t *p, size_t images, int channels, size_t length, int64_t *out) {
    for (size_t n = 0; n < images; n++) {
        const int16_t *image = p + n * (size_t)channels * length;
        for (int i = 0; i < channels; i++) {
            const int16_t *a = image + (size_t)i * length;
            for (int j = i + 1; j < channels; j++) {
                const int16_t *b = image + (size_t)j * length;
                int64_t acc = 0;
                for (size_t k = 0; k < length; k++) acc += (int32_t)a[k] * (int32_t)b[k];
                out[i * channels + j] += acc;
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * 8-bit batches in planes, every per-batch statistic in one read of the data.
 *
 * prep_uint8_planes reads a C-contiguous uint8 batch (images, channels, length) once and gives:
 *   hist[c * 256 + v]   += pixels of channel c with value v (the batch, int64, added to),
 *   sums[n * C + c]      = sum of image n's channel c (int64, written),
 *   squares[n * C + c]   = sum of its squares (int64, written),
 *   cross[i * C + j]    += sum over the batch of x_i x_j, for i < j (uint64, added to; the rest
 *                          untouched), when `cross` is not NULL.
 * The planes are walked together PLANE_CHUNK pixels at a time, so that the histogram, the sums
 * and the cross sums read each chunk from cache after its one read from memory.
 *
 * Exactness: within a chunk (at most PLANE_CHUNK = 4096 pixels) a sum is below 4096 * 255 < 2**20
 * and a sum of squares or products below 4096 * 255 * 255 < 2**28, so uint32 holds them; they
 * are added into int64 / uint64, which hold 2**63 / 65025 > 1.4e14 pixels' squares. The histogram
 * counts in uint32 tables (four per channel, against the store-to-load dependency of repeated
 * values) that are folded into the int64 histogram before any could pass 2**32 - 1 (a counter
 * holds at most the pixels counted since the last fold) and at the end.
 *
 * Returns 0, or -1 when the tables' memory (4 KiB a channel) cannot be had (nothing is changed).
 */
#define PLANE_CHUNK 4096

static inline void count_chunk(const uint8_t *x, size_t m, uint32_t *t) {
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        t[x[i]]++;
        t[LEVELS + x[i + 1]]++;
        t[2 * LEVELS + x[i + 2]]++;
        t[3 * LEVELS + x[i + 3]]++;
    }
    for (; i < m; i++) t[x[i]]++;
}

static void fold_tables(uint32_t *tables, int channels, int64_t *hist) {
    for (int c = 0; c < channels; c++) {
        uint32_t *t = tables + (size_t)c * 4 * LEVELS;
        for (int v = 0; v < LEVELS; v++)
            hist[c * LEVELS + v] += (int64_t)t[v] + t[LEVELS + v] + t[2 * LEVELS + v] + t[3 * LEVELS + v];
    }
    memset(tables, 0, (size_t)channels * 4 * LEVELS * sizeof(uint32_t));
}

CLONES EXPORT int prep_uint8_planes(const uint8_t *p, size_t images, int channels, size_t length, int64_t *hist,
                                    int64_t *sums, int64_t *squares, uint64_t *cross) {
    uint32_t *tables = calloc((size_t)channels * 4 * LEVELS, sizeof(uint32_t));
    if (tables == NULL) return -1;
    size_t pending = 0; /* pixels of each channel counted in the tables since the last fold */
    for (size_t n = 0; n < images; n++) {
        const uint8_t *image = p + n * (size_t)channels * length;
        int64_t *s = sums + n * (size_t)channels, *q = squares + n * (size_t)channels;
        for (int c = 0; c < channels; c++) s[c] = q[c] = 0;
        for (size_t k = 0; k < length; k += PLANE_CHUNK) {
            size_t m = length - k < PLANE_CHUNK ? length - k : PLANE_CHUNK;
            if (pending + m > UINT32_MAX) {
                fold_tables(tables, channels, hist);
                pending = 0;
            }
            pending += m;
            for (int c = 0; c < channels; c++) {
                const uint8_t *x = image + (size_t)c * length + k;
                uint32_t a = 0, b = 0;
                for (size_t i = 0; i < m; i++) {
                    a += x[i];
                    b += (uint32_t)x[i] * x[i];
                }
                s[c] += a;
                q[c] += b;
                count_chunk(x, m, tables + (size_t)c * 4 * LEVELS);
                if (cross != NULL)
                    for (int j = c + 1; j < channels; j++) {
                        const uint8_t *y = image + (size_t)j * length + k;
                        uint32_t d = 0;
                        for (size_t i = 0; i < m; i++) d += (uint32_t)x[i] * y[i];
                        cross[c * channels + j] += d;
                    }
            }
        }
    }
    fold_tables(tables, channels, hist);
    free(tables);
    return 0;
}

extern PyMethodDef prep_kernel_methods[]; /* _kernels_api.c: called from Python directly */

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    "_kernels",
    "Exact histograms and cross sums of 8-bit pixels; called through ctypes by prep.kernels, and the "
    "per-image functions of _kernels_api.c.",
    -1,
    prep_kernel_methods,
};

/* The version of _kernels_api.c's calling conventions: prep.stats.kernels uses them only from a
 * build of the version it expects (an editable install built before a change keeps its .so). */
#define API_VERSION 2

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *module = PyModule_Create(&kernels_module);
    if (module != NULL && PyModule_AddIntConstant(module, "API_VERSION", API_VERSION) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
