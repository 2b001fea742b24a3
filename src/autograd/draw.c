/*
 * draw.c - the graph behind a tensor as Graphviz DOT or a Mermaid flowchart.
 *
 * The tensors reachable from t through recorded nodes are listed in post-order
 * (inputs before results) by an iterative search, numbered, and written as in
 * the seeds' diagrams: circles for tensors, boxes for ops. A tensor is labelled
 * with its name (nb_set_name; the nabla program names parameters by their
 * module paths, such as "0.weight") or t<i>, and its shape. Names and custom op
 * names are escaped for each format, so any text draws.
 */
#include <stdio.h>
#include <string.h>

#include "../core/internal.h"

void nb_set_name(nb_tensor *t, const char *name) {
    if (!nbi_check("nb_set_name", t, 1)) return;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
}

/* Post-order list of the graph's tensors (caller frees with nbi_dealloc). */
static nb_tensor **collect(const char *fn, nb_tensor *t, size_t *n) {
    uint64_t mark = ++nbi_tls()->epoch;
    size_t cap = 64, ns = 0, no = 0;
    nb_tensor **out = nbi_alloc(cap * sizeof *out);
    struct fr {
        nb_tensor *t;
        int next;
    } *st = nbi_alloc(cap * sizeof *st);
    size_t scap = cap;
    if (!out || !st) goto oom;
    st[ns++] = (struct fr){t, 0};
    t->mark = mark;
    while (ns) {
        struct fr *f = &st[ns - 1];
        nb_tensor *x = f->t;
        if (x->has_node && !x->node.released && f->next < x->node.nin) {
            nb_tensor *c = x->node.in[f->next++];
            if (c->mark != mark) {
                c->mark = mark;
                if (ns == scap) {
                    struct fr *ns2 = nbi_alloc(2 * scap * sizeof *st);
                    if (!ns2) goto oom;
                    memcpy(ns2, st, scap * sizeof *st);
                    nbi_dealloc(st);
                    st = ns2;
                    scap *= 2;
                }
                st[ns++] = (struct fr){c, 0};
            }
            continue;
        }
        if (no == cap) {
            nb_tensor **o2 = nbi_alloc(2 * cap * sizeof *out);
            if (!o2) goto oom;
            memcpy(o2, out, cap * sizeof *out);
            nbi_dealloc(out);
            out = o2;
            cap *= 2;
        }
        x->draw_id = (int64_t)no;
        out[no++] = x;
        ns--;
    }
    nbi_dealloc(st);
    *n = no;
    return out;
oom:
    nbi_dealloc(st);
    nbi_dealloc(out);
    return nbi_err(fn, "out of memory walking the graph");
}

static const char *label(const nb_tensor *t, char *buf, size_t cap) {
    char s[160];
    nbi_shape_s(t, s, sizeof s);
    if (t->name[0])
        snprintf(buf, cap, "%s %s", t->name, s);
    else
        snprintf(buf, cap, "t%lld %s", (long long)t->draw_id, s);
    return buf;
}

/* s inside a double-quoted DOT string or Mermaid label. */
static void put_text(FILE *f, const char *s, bool mermaid) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (mermaid && (c == '"' || c == '<' || c == '>' || c == '#' || c == '&')) fprintf(f, "#%d;", c);
        else if (!mermaid && (c == '"' || c == '\\')) fprintf(f, "\\%c", c);
        else if (c < 0x20) fputc(' ', f);
        else fputc(c, f);
    }
}

static int draw(const char *fn, nb_tensor *t, FILE *f, bool mermaid) {
    if (!nbi_check(fn, t, 1)) return -1;
    if (!f) return nbi_err(fn, "file is NULL"), -1;
    size_t n = 0;
    nb_tensor **ts = collect(fn, t, &n);
    if (!ts) return -1;
    fputs(mermaid ? "flowchart LR\n" : "digraph nabla {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n", f);
    char buf[200];
    for (size_t i = 0; i < n; i++) {
        nb_tensor *x = ts[i];
        bool leaf = !x->has_node;
        label(x, buf, sizeof buf);
        fprintf(f, mermaid ? "  t%zu((\"" : "  t%zu [label=\"", i);
        put_text(f, buf, mermaid);
        if (mermaid)
            fprintf(f, "%s\"))\n", leaf && x->requires_grad ? " leaf" : "");
        else
            fprintf(f, "\", shape=ellipse%s];\n",
                    leaf ? (x->requires_grad ? ", style=filled, fillcolor=\"#cde4ff\", peripheries=2"
                                             : ", style=filled, fillcolor=\"#eeeeee\"")
                         : "");
        if (leaf) continue;
        const char *op = x->node.op == NBI_OP_CUSTOM && x->node.ext ? nb_ctx_name(x->node.ext) : nbi_ops[x->node.op].name;
        if (x->node.op == NBI_OP_DENSE) { /* a fused Linear: its activation is part of the op */
            static const char *const dense[] = {"dense", "dense+relu", "dense+tanh", "dense+sigmoid"};
            int a = x->node.ip[0];
            if (a >= 0 && a < 4) op = dense[a];
        }
        fprintf(f, mermaid ? "  o%zu[\"" : "  o%zu [label=\"", i);
        put_text(f, op ? op : "custom", mermaid);
        fputs(mermaid ? "\"]\n" : "\", shape=box];\n", f);
        if (!x->node.released)
            for (int k = 0; k < x->node.nin; k++)
                fprintf(f, mermaid ? "  t%lld --> o%zu\n" : "  t%lld -> o%zu;\n", (long long)x->node.in[k]->draw_id, i);
        fprintf(f, mermaid ? "  o%zu --> t%zu\n" : "  o%zu -> t%zu;\n", i, i);
    }
    if (!mermaid) fputs("}\n", f);
    nbi_dealloc(ts);
    return ferror(f) ? (nbi_err(fn, "write failed"), -1) : 0;
}

int nb_graph_dot(nb_tensor *t, FILE *f) { return draw("nb_graph_dot", t, f, false); }
int nb_graph_mermaid(nb_tensor *t, FILE *f) { return draw("nb_graph_mermaid", t, f, true); }
