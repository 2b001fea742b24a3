/*
 * registry.c - the op table, built from ops.def.
 */
#include "../core/internal.h"

#define NB_OP(id, name, arity, saved, rule) NBI_API int rule(nb_tensor *out, nb_tensor *g, nb_tensor **gin);
#include "ops.def"
#undef NB_OP

const nbi_op_info nbi_ops[NBI_OP_COUNT] = {
#define NB_OP(id, name, arity, saved, rule) [NBI_OP_##id] = {name, arity, saved, rule},
#include "ops.def"
#undef NB_OP
};

_Static_assert(sizeof(nbi_ops) / sizeof(nbi_ops[0]) == NBI_OP_COUNT, "every op needs a table entry");
