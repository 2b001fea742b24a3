/*
 * device.c - devices in the public API: which device a tensor lives on, moving
 * it to another, and the checks ops make that their operands share one.
 */
#include <stdio.h>

#include "internal.h"

nb_device nb_cpu(void) { return (nb_device){NB_DEV_CPU, 0}; }

nb_device nb_device_of(const nb_tensor *t) {
    if (!nbi_check("nb_device_of", t, 1)) return nb_cpu();
    return t->st->be->device;
}

bool nb_device_available(nb_device dev) { return nbi_backend_for(dev) != NULL; }

char *nb_device_str(nb_device dev, char *buf, size_t cap) {
    if (!buf || cap == 0) return buf;
    if (dev.type == NB_DEV_CPU)
        snprintf(buf, cap, "cpu");
    else if (dev.type == NB_DEV_CUDA)
        snprintf(buf, cap, "cuda:%d", dev.index);
    else
        snprintf(buf, cap, "device %d:%d", (int)dev.type, dev.index);
    return buf;
}

const char *nb_backend_name(nb_device dev) {
    const nbi_backend *be = nbi_backend_for(dev);
    return be ? be->name : NULL;
}

static bool same(nb_device a, nb_device b) { return a.type == b.type && a.index == b.index; }

nb_tensor *nb_to_device(nb_tensor *t, nb_device dev) {
    const char *fn = "nb_to_device";
    if (!nbi_check(fn, t, 1)) return NULL;
    char b[32];
    const nbi_backend *be = nbi_backend_for(dev);
    if (!be) return nbi_err(fn, "device %s is not available in this build", nb_device_str(dev, b, sizeof b));
    if (same(be->device, t->st->be->device)) return nb_reshape(t, t->rank, t->shape); /* a view, recorded */
    /* Only one device exists today; a second backend brings the copy between the two (through host memory,
       recorded so that the gradient returns to t's device). */
    char a[32];
    return nbi_err(fn, "no copy from %s to %s in this build", nb_device_str(t->st->be->device, a, sizeof a),
                   nb_device_str(dev, b, sizeof b));
}

bool nbi_same_device(const char *fn, int n, nb_tensor *const *ts) {
    const nb_tensor *first = NULL;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (!first) {
            first = ts[i];
            continue;
        }
        nb_device a = first->st->be->device, d = ts[i]->st->be->device;
        if (!same(a, d)) {
            char sa[32], sd[32];
            nbi_err(fn, "operands are on different devices: %s %s on %s and %s %s on %s", "tensor",
                    NBI_SHAPE(first), nb_device_str(a, sa, sizeof sa), "tensor", NBI_SHAPE(ts[i]),
                    nb_device_str(d, sd, sizeof sd));
            return false;
        }
    }
    return true;
}

void *nbi_no_kernel(const char *fn, const nb_tensor *t, const char *name) {
    char d[32];
    return nbi_err(fn, "backend %s has no kernel '%s' (tensor %s on %s)", t->st->be->name, name, NBI_SHAPE(t),
                   nb_device_str(t->st->be->device, d, sizeof d));
}
