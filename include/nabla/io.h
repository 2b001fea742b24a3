/*
 * nabla/io.h - checkpoints in the safetensors format (weights move between
 * nabla and the PyTorch ecosystem), built on the public API.
 *
 * A file is: the header size N (u64, little-endian), N bytes of JSON mapping
 * each tensor name to {"dtype", "shape", "data_offsets"} (plus an optional
 * "__metadata__" of strings), then the raw little-endian data. nabla writes
 * F32, F64 and I64 tensors, keys sorted, header padded to 8 bytes.
 */
#ifndef NABLA_IO_H
#define NABLA_IO_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Write n named tensors to path atomically: a new temporary file in the same
   folder (".<name>.tmp-<pid>-<k>", unique to the process and the call), flushed
   to disk, then renamed over path, so a crash or a concurrent writer of the
   same path never leaves a half-written checkpoint (the last rename wins).
   A file replaced keeps its permissions. Names are unique, non-empty, without
   control characters, '"' or '\\', of any length (the header's limit is the
   format's 100 MB). Returns 0 or nonzero with an error that names the path and
   the system's reason ("Not a directory", ...); the old file, if any, is then
   untouched and no temporary file is left. */
NB_API int nb_save_safetensors(const char *path, int n, nb_tensor *const *ts, const char *const *names);
/* Read the named tensors of path into the n existing contiguous tensors ts,
   which must match the file's shapes and dtypes. All or nothing: a missing
   name, a mismatch, or a truncated or corrupt file (including a header that
   names a tensor twice) is an error that changes no tensor. Bytes of the file
   quoted in a message are escaped (\xHH) unless printable. */
NB_API int nb_load_safetensors(const char *path, int n, nb_tensor *const *ts, const char *const *names);
/* The same for all parameters and buffers of a module, under their dotted
   names ("blocks.0.attn.proj.weight"). A tied parameter is one tensor and is
   saved once, under its first path (as safetensors' save_model does; a
   safetensors file cannot hold two names for one storage). Loading takes each
   tensor from its first path, or else from another path it is registered
   under, so a file holding any one of a tied group's names, or all of them,
   loads; names in the file that the module does not have are ignored, of
   whatever dtype (a GPT-2 file's BOOL or F16 buffers). Reading a tensor the
   file holds in a dtype other than F32, F64 or I64 is an error naming it. */
NB_API int nb_module_save(nb_module *m, const char *path);
NB_API int nb_module_load(nb_module *m, const char *path);

/* One series of a chart: y[0..len-1] plotted at x = 1, 2, ..., len (epochs as
   a console numbers them) in panel `panel` (0 is the top one); non-finite
   values are skipped. */
typedef struct {
    const char *label; /* legend text */
    const double *y;
    int64_t len;
    int panel;
} nb_svg_series;

/* A panel of a chart: the title of its y axis (or NULL), and whether the axis
   is logarithmic (base 10; values <= 0 are then skipped), e.g. for a loss that
   falls over decades. */
typedef struct {
    const char *ylabel;
    bool log_y;
} nb_svg_panel;

/* Write a self-contained SVG chart of npanels panels (1 to 8) stacked top to
   bottom and sharing the x axis (titled xlabel): each panel has its own y axis
   as panels[p] says (panels may be NULL), ticks at round values (linear: 1, 2
   or 5 times a power of ten apart, the range widened to the ticks around the
   data; log: the 1-2-5 values, or the powers of ten over more than 3
   decades), a legend of its series above it, and the last value of each
   series written at the right end of its line. E.g. a run's loss in one panel
   and its accuracy in another. Returns 0, or nonzero with an error. */
NB_API int nb_svg_chart(const char *path, const char *title, const char *xlabel, int npanels,
                        const nb_svg_panel *panels, int nseries, const nb_svg_series *series);
/* The same in one panel: n series (at most 64), series i has lens[i] points at
   x = 1, 2, ... */
NB_API int nb_svg_curves(const char *path, const char *title, int n, const char *const *labels,
                         const double *const *ys, const int64_t *lens);
/* Round axis ticks for data in [lo, hi]: writes first and step and returns the
   count n (2 <= n <= max_ticks) of the ticks first + i step, i < n, with first
   <= lo, first + (n - 1) step >= hi and step 1, 2 or 5 times a power of ten,
   the smallest such step. lo == hi gives a small range around the value.
   Returns 0 with an error for non-finite bounds, lo > hi or max_ticks < 3 (a range
   across 0 needs 3). */
NB_API int nb_nice_ticks(double lo, double hi, int max_ticks, double *first, double *step);

#ifdef __cplusplus
}
#endif
#endif
