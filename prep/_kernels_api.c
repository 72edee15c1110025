/* prep._kernels' functions called from Python directly: the per-image work of small files.
 *
 * A 64x64 JPEG decodes in about 40 us; a call through ctypes, a NumPy temporary or a header
 * walked in Python costs several microseconds each, so for small images prep's own work would
 * cost as much as the decode. These functions do that work in one call each:
 *
 *   jpeg_header(data) walks a JPEG's header once and says both what prep.decode.jpeg_kinds'
 *   read_header and is_plain say (the Python functions stay the reference and the fallback;
 *   tests/decode/test_jpeg_header_native.py holds them equal on fuzzed headers);
 *
 *   reduce8(pixels, channels, counts, cross, moments) reduces one interleaved 8-bit image to
 *   its per-channel histogram, its per-channel pixel count, sum and sum of squares and, when
 *   asked, its raw cross sums (diagonal included), written into arrays the caller owns.
 *
 * Only bytes the caller gives are read, and every read is bounds-checked against their length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define HAVE_SCAN 1
#endif

#define LEVELS 256
#define MAX_SEGMENTS 4096 /* as jpeg_kinds._MAX_SEGMENTS */

/* the kernels of _kernels.c */
void prep_histogram_interleaved(const uint8_t *p, size_t pixels, int channels, int64_t *hist);
void prep_cross_interleaved3(const uint8_t *p, size_t pixels, uint64_t *out);

static int is_sof(int m) {
    switch (m) {
    case 0xC0: case 0xC1: case 0xC2: case 0xC3: case 0xC5: case 0xC6: case 0xC7:
    case 0xC9: case 0xCA: case 0xCB: case 0xCD: case 0xCE: case 0xCF:
        return 1;
    default:
        return 0;
    }
}

/* jpeg_kinds._jpeg_kind: 1 and the frame's offset (the byte after its length) and the Adobe
 * flag (-1: none), or 0 where read_header says None. */
static int find_frame(const uint8_t *d, Py_ssize_t n, Py_ssize_t *frame, int *marker_out, int *adobe) {
    Py_ssize_t pos = 2;
    *adobe = -1;
    for (int s = 0; s < MAX_SEGMENTS; s++) {
        if (pos >= n || d[pos] != 0xFF) return 0;
        while (pos < n && d[pos] == 0xFF) pos++;
        if (pos >= n) return 0;
        int marker = d[pos++];
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
        if (pos + 2 > n) return 0;
        Py_ssize_t length = ((Py_ssize_t)d[pos] << 8) | d[pos + 1];
        if (length < 2) return 0;
        if (marker == 0xEE && pos + 7 <= n && memcmp(d + pos + 2, "Adobe", 5) == 0 && length >= 12) {
            if (pos + 13 >= n) return 0;
            *adobe = d[pos + 13];
        }
        if (is_sof(marker)) {
            if (pos + 8 > n) return 0;
            int count = d[pos + 7];
            if (count > 0 && pos + 8 + 3 * (Py_ssize_t)(count - 1) + 1 >= n) return 0;
            *frame = pos;
            *marker_out = marker;
            return 1;
        }
        if (marker == 0xD9 || marker == 0xDA) return 0;
        pos += length;
    }
    return 0;
}

/* jpeg_kinds._whole_tables */
static int whole_tables(const uint8_t *p, Py_ssize_t len) {
    Py_ssize_t pos = 0;
    while (pos < len) {
        int precision = p[pos] >> 4, table = p[pos] & 15;
        if (precision > 1 || table > 3) return 0;
        pos += 1 + 64 * (precision + 1);
    }
    return pos == len && pos > 0;
}

struct app_prefix {
    int marker;
    const char *prefix;
    Py_ssize_t size;
    Py_ssize_t minimum; /* -1: not plain */
};

/* jpeg_kinds._APP_PREFIXES */
static const struct app_prefix APP_PREFIXES[] = {
    {0xE0, "JFIF", 4, 12},
    {0xEE, "Adobe", 5, 12},
    {0xE1, "Exif\0\0", 6, 6},
    {0xE1, "http://ns.adobe.com/xap/1.0/\0", 29, 29},
    {0xE2, "ICC_PROFILE\0", 12, 12},
    {0xE2, "FPXR\0", 5, -1},
    {0xE2, "MPF\0", 4, -1},
    {0xED, "Photoshop 3.0\0", 14, -1},
};

/* jpeg_kinds.is_plain (the caller has checked the magic) */
static int is_plain(const uint8_t *d, Py_ssize_t end) {
    Py_ssize_t pos = 2;
    int frames = 0;
    for (int s = 0; s < MAX_SEGMENTS; s++) {
        if (pos + 1 >= end || d[pos] != 0xFF || d[pos + 1] == 0xFF) return 0;
        int marker = d[pos + 1];
        if (pos + 4 > end) return 0;
        Py_ssize_t length = ((Py_ssize_t)d[pos + 2] << 8) | d[pos + 3];
        if (length < 2 || pos + 2 + length > end) return 0;
        const uint8_t *payload = d + pos + 4;
        Py_ssize_t size = length - 2;
        if (marker == 0xDA) return frames == 1 && pos + 2 + length < end;
        if (marker >= 0xE0 && marker <= 0xEF) {
            for (size_t k = 0; k < sizeof APP_PREFIXES / sizeof APP_PREFIXES[0]; k++) {
                const struct app_prefix *a = &APP_PREFIXES[k];
                if (marker == a->marker && size >= a->size && memcmp(payload, a->prefix, (size_t)a->size) == 0) {
                    if (a->minimum < 0 || size < a->minimum) return 0;
                    break;
                }
            }
        } else if (marker == 0xDB) {
            if (!whole_tables(payload, size)) return 0;
        } else if (marker == 0xDD) {
            if (size != 2) return 0;
        } else if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) {
            frames++;
            if (size < 6 || payload[0] != 8 || (payload[5] != 1 && payload[5] != 3 && payload[5] != 4)) return 0;
            int height = (payload[1] << 8) | payload[2], width = (payload[3] << 8) | payload[4];
            if (!height || !width) return 0;
            if (size != 6 + 3 * (Py_ssize_t)payload[5] || frames > 1) return 0;
        } else if (marker != 0xC4 && marker != 0xFE) {
            return 0;
        }
        pos += 2 + length;
    }
    return 0;
}

static PyObject *jpeg_header(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *d = (const uint8_t *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *out = NULL;
    Py_ssize_t frame = 0;
    int marker = 0, adobe = -1;
    if (n < 3 || d[0] != 0xFF || d[1] != 0xD8 || d[2] != 0xFF || !find_frame(d, n, &frame, &marker, &adobe)) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    int count = d[frame + 7];
    PyObject *sampling = PyTuple_New(count), *ids = PyTuple_New(count);
    if (sampling == NULL || ids == NULL) goto done;
    for (int i = 0; i < count; i++) {
        PyTuple_SET_ITEM(ids, i, PyLong_FromLong(d[frame + 8 + 3 * i]));
        PyTuple_SET_ITEM(sampling, i, PyLong_FromLong(d[frame + 8 + 3 * i + 1]));
    }
    PyObject *flag = adobe < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(adobe);
    /* (marker, precision, components, sampling, adobe, ids, width, height, plain) */
    out = Py_BuildValue(
        "(iiiONOiiO)", marker, d[frame + 2], count, sampling, flag, ids, (d[frame + 5] << 8) | d[frame + 6],
        (d[frame + 3] << 8) | d[frame + 4], is_plain(d, n) ? Py_True : Py_False);
done:
    Py_XDECREF(sampling);
    Py_XDECREF(ids);
    PyBuffer_Release(&view);
    return out;
}

/* A writable C-contiguous buffer of exactly `items` int64 values. */
static int int64_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t items, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return 0;
    const char *f = view->format == NULL ? "" : view->format;
    if (*f == '@' || *f == '=' || *f == '<') f++; /* native order (prep builds for little-endian x86 and ARM) */
    if (view->itemsize != 8 || view->len != items * 8 || (strcmp(f, "q") && strcmp(f, "l"))) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd int64 values", what, items);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

static PyObject *reduce8(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "reduce8(pixels, channels, counts, cross, moments) takes 5 arguments");
        return NULL;
    }
    int channels = (int)PyLong_AsLong(args[1]);
    if (channels == -1 && PyErr_Occurred()) return NULL;
    if (channels != 1 && channels != 3) {
        PyErr_Format(PyExc_ValueError, "channels: expected 1 or 3; got %d", channels);
        return NULL;
    }
    Py_buffer pixels, counts, cross, moments;
    if (PyObject_GetBuffer(args[0], &pixels, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (pixels.itemsize != 1 || pixels.len % channels) {
        PyBuffer_Release(&pixels);
        PyErr_SetString(PyExc_ValueError, "pixels: expected interleaved 8-bit values, a whole number of pixels");
        return NULL;
    }
    if (!int64_buffer(args[2], &counts, (Py_ssize_t)channels * LEVELS, "counts")) {
        PyBuffer_Release(&pixels);
        return NULL;
    }
    if (!int64_buffer(args[4], &moments, (Py_ssize_t)channels * 3, "moments")) {
        PyBuffer_Release(&pixels);
        PyBuffer_Release(&counts);
        return NULL;
    }
    int with_cross = args[3] != Py_None;
    if (with_cross && !int64_buffer(args[3], &cross, (Py_ssize_t)channels * channels, "cross")) {
        PyBuffer_Release(&pixels);
        PyBuffer_Release(&counts);
        PyBuffer_Release(&moments);
        return NULL;
    }
    int64_t *hist = (int64_t *)counts.buf;
    size_t count = (size_t)(pixels.len / channels);
    memset(hist, 0, (size_t)channels * LEVELS * sizeof(int64_t));
    Py_BEGIN_ALLOW_THREADS
    prep_histogram_interleaved((const uint8_t *)pixels.buf, count, channels, hist);
    /* per channel: pixels, sum and sum of squares, from the histogram (255**2 * 2**40 < 2**63) */
    int64_t *m = (int64_t *)moments.buf;
    for (int c = 0; c < channels; c++) {
        int64_t n = 0, sum = 0, sq = 0;
        for (int v = 0; v < LEVELS; v++) {
            int64_t h = hist[c * LEVELS + v];
            n += h;
            sum += h * v;
            sq += h * (int64_t)v * v;
        }
        m[c * 3] = n;
        m[c * 3 + 1] = sum;
        m[c * 3 + 2] = sq;
    }
    if (with_cross) {
        /* the diagonal is the sums of squares, the rest from the pixels */
        int64_t *out = (int64_t *)cross.buf;
        for (int c = 0; c < channels; c++) out[c * channels + c] = m[c * 3 + 2];
        if (channels == 3) {
            uint64_t pairs[3] = {0, 0, 0};
            prep_cross_interleaved3((const uint8_t *)pixels.buf, count, pairs);
            out[1] = out[3] = (int64_t)pairs[0];
            out[2] = out[6] = (int64_t)pairs[1];
            out[5] = out[7] = (int64_t)pairs[2];
        }
    }
    Py_END_ALLOW_THREADS
    if (with_cross) PyBuffer_Release(&cross);
    PyBuffer_Release(&moments);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&pixels);
    Py_RETURN_NONE;
}

#ifdef HAVE_SCAN
/* scan_dir(fd, follow_symlinks) -> [(name, is_symlink, errno, mode, size, mtime_ns, dev, ino), ...]:
 * the entries of the open directory `fd` (not "." or ".."), in directory order, each with what
 * prep.sources.folder's listing asks of a DirEntry: whether it is a symlink (d_type, or lstat
 * where the file system does not say), and the result of its stat (followed with
 * `follow_symlinks`, never for a symlink without it: errno and zeros there) or the errno of a
 * failed one. `fd` stays open and is not moved: the directory is read through a duplicate. */
static PyObject *scan_dir(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "scan_dir(fd, follow_symlinks) takes 2 arguments");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    int follow = PyObject_IsTrue(args[1]);
    if (follow < 0) return NULL;
    int dup_fd = dup(fd);
    if (dup_fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    DIR *dir = fdopendir(dup_fd);
    if (dir == NULL) {
        close(dup_fd);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    rewinddir(dir);
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        closedir(dir);
        return NULL;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(dir);
        if (e == NULL) {
            if (errno) {
                PyErr_SetFromErrno(PyExc_OSError);
                Py_CLEAR(out);
            }
            break;
        }
        const char *name = e->d_name;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
        struct stat st;
        int link = -1, failed = 0;
#ifdef DT_LNK
        if (e->d_type != DT_UNKNOWN) link = e->d_type == DT_LNK;
#endif
        if (link < 0) { /* the file system does not say: as DirEntry.is_symlink, by lstat */
            link = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
        }
        memset(&st, 0, sizeof st);
        if (!follow && link) {
            failed = 0; /* not stat'ed: the listing passes over it */
        } else if (fstatat(fd, name, &st, link ? 0 : AT_SYMLINK_NOFOLLOW) != 0) {
            failed = errno;
            memset(&st, 0, sizeof st);
        }
        PyObject *text = PyUnicode_DecodeFSDefault(name);
        if (text == NULL) {
            Py_CLEAR(out);
            break;
        }
        long long mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        PyObject *item = Py_BuildValue("(NiiILLKK)", text, link, failed, (unsigned int)st.st_mode,
                                       (long long)st.st_size, mtime_ns, (unsigned long long)st.st_dev,
                                       (unsigned long long)st.st_ino);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(item);
    }
    closedir(dir);
    return out;
}
#endif

PyMethodDef prep_kernel_methods[] = {
#ifdef HAVE_SCAN
    {"scan_dir", (PyCFunction)(void (*)(void))scan_dir, METH_FASTCALL,
     "scan_dir(fd, follow_symlinks) -> [(name, is_symlink, errno, mode, size, mtime_ns, dev, ino), ...]"},
#endif
    {"jpeg_header", (PyCFunction)jpeg_header, METH_O,
     "jpeg_header(data) -> (marker, precision, components, sampling, adobe, ids, width, height, plain) or None"},
    {"reduce8", (PyCFunction)(void (*)(void))reduce8, METH_FASTCALL,
     "reduce8(pixels, channels, counts, cross, moments): histogram, moments and cross sums of one 8-bit image"},
    {NULL, NULL, 0, NULL},
};
