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
/* The same for all parameters of a module, under their dotted names. */
NB_API int nb_module_save(nb_module *m, const char *path);
NB_API int nb_module_load(nb_module *m, const char *path);

/* Plot n series of values (series i has lens[i] points, x = 0, 1, ...) as a
   self-contained SVG line chart with axes, ticks, a title and a legend, e.g.
   the loss and accuracy curves of a run. Non-finite values are skipped. */
NB_API int nb_svg_curves(const char *path, const char *title, int n, const char *const *labels,
                         const double *const *ys, const int64_t *lens);

#ifdef __cplusplus
}
#endif
#endif
