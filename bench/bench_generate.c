/*
 * bench_generate.c - text generation with nb_gpt_generate (nabla/gpt.h): a GPT-2 model of random
 * weights (seeded, f32, dropout 0) continues a fixed prompt by a fixed number of tokens, with the KV
 * cache (or, with --no-cache, recomputing the whole sequence for each token). The PyTorch peer is
 * bench/peer_torch_generate.py: the same architecture, an explicit per-layer key/value cache, the same
 * prompt length, token count and sampling (temperature 1, top-k 40, multinomial).
 *
 * Each round times one nb_gpt_generate call: the prompt's forward (prefill) and every decoding step,
 * the sampler included, from the first call to the last token. One untimed warm-up generation runs
 * first (it fills nabla's block cache and starts the thread pool).
 *
 * Usage: bench_generate [--config small|124m] [--threads N] [--tokens N] [--prompt-len N]
 *                       [--rounds R] [--no-cache] [--greedy]
 *   124m (the default): vocab 50257, ctx 1024, 12 layers, 12 heads, dim 768 (GPT-2 small);
 *   small: vocab 8192, ctx 256, 4 layers, 4 heads, dim 256.
 *   Defaults: 1 thread, 200 tokens, a 16-token prompt, 3 rounds, top-k 40 sampling at temperature 1
 *   (--greedy: temperature 0).
 *
 * Prints each round, "nabla gen_tokens_per_s CONFIG THREADS V" (the median of the rounds; bench/run.sh's
 * table reads it), "nabla gen_ms_per_token CONFIG THREADS V" and a RESULT line with the least and most
 * rounds and cpu_per_wall (CPU seconds of the process over wall seconds in the timed rounds). Tokens per
 * second counts the generated tokens only (not the prompt). Nothing here asserts on time.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla.h"
#include "nabla/gpt.h"
#include "timing.h"

typedef struct {
    const char *name;
    nb_gpt_config cfg;
} gen_config;

static const gen_config CONFIGS[] = {
    {"small", {.vocab = 8192, .ctx = 256, .layers = 4, .heads = 4, .dim = 256, .dropout = 0}},
    {"124m", {.vocab = 50257, .ctx = 1024, .layers = 12, .heads = 12, .dim = 768, .dropout = 0}},
};

static int fail(const char *what)
{
    const char *e = nb_last_error();
    printf("# %s failed: %s\n", what, e ? e : "(no message)");
    return 1;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    const gen_config *gc = &CONFIGS[1];
    int threads = 1, rounds = 3;
    int64_t tokens = 200, plen = 16;
    bool no_cache = false, greedy = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (strcmp(a, "--config") == 0 && v && strcmp(v, "small") == 0) gc = &CONFIGS[0];
        else if (strcmp(a, "--config") == 0 && v && strcmp(v, "124m") == 0) gc = &CONFIGS[1];
        else if (strcmp(a, "--threads") == 0 && v && atoi(v) > 0) threads = atoi(v);
        else if (strcmp(a, "--tokens") == 0 && v && atoll(v) > 0) tokens = atoll(v);
        else if (strcmp(a, "--prompt-len") == 0 && v && atoll(v) > 0) plen = atoll(v);
        else if (strcmp(a, "--rounds") == 0 && v && atoi(v) > 0) rounds = atoi(v);
        else if (strcmp(a, "--no-cache") == 0) no_cache = true, used = 0;
        else if (strcmp(a, "--greedy") == 0) greedy = true, used = 0;
        else {
            fprintf(stderr,
                    "usage: %s [--config small|124m] [--threads N] [--tokens N] [--prompt-len N] [--rounds R]\n"
                    "          [--no-cache] [--greedy]\n",
                    argv[0]);
            return 2;
        }
        i += used;
    }
    const nb_gpt_config *cfg = &gc->cfg;
    if (plen + tokens > cfg->ctx) {
        fprintf(stderr, "%s: prompt %lld + tokens %lld exceed the config's ctx %lld\n", argv[0], (long long)plen,
                (long long)tokens, (long long)cfg->ctx);
        return 2;
    }
    if (nb_set_num_threads(threads) != 0) return fail("nb_set_num_threads");

    nb_rng rng;
    nb_rng_seed(&rng, 1234);
    nb_module *gpt = nb_gpt(cfg, NB_F32, &rng);
    if (!gpt) return fail("nb_gpt");
    int64_t *prompt = malloc(sizeof(int64_t) * (size_t)plen), *out = malloc(sizeof(int64_t) * (size_t)tokens);
    double *t = malloc(sizeof(double) * (size_t)rounds);
    if (!prompt || !out || !t) return 1;
    for (int64_t i = 0; i < plen; i++) prompt[i] = (i * 7919 + 13) % cfg->vocab; /* the peer's prompt */
    nb_gen_options o = nb_gen_defaults();
    o.temperature = greedy ? 0.0 : 1.0;
    o.top_k = greedy ? 0 : 40;
    o.seed = 42;
    o.no_cache = no_cache;

    printf("# nabla %d.%d.%d threads=%d config=%s vocab=%lld ctx=%lld layers=%lld heads=%lld dim=%lld f32 "
           "prompt=%lld tokens=%lld sampling=%s cache=%s\n",
           NABLA_VERSION_MAJOR, NABLA_VERSION_MINOR, NABLA_VERSION_PATCH, nb_num_threads(), gc->name,
           (long long)cfg->vocab, (long long)cfg->ctx, (long long)cfg->layers, (long long)cfg->heads,
           (long long)cfg->dim, (long long)plen, (long long)tokens, greedy ? "greedy" : "top_k=40,temperature=1",
           no_cache ? "no" : "kv");
    if (nb_gpt_generate(gpt, prompt, plen, tokens, &o, out) != tokens) return fail("nb_gpt_generate (warm-up)");
    double wall = 0, cpu = 0;
    for (int r = 0; r < rounds; r++) {
        const double c0 = cpu_seconds(), t0 = bench_now();
        const int64_t n = nb_gpt_generate(gpt, prompt, plen, tokens, &o, out);
        const double dt = bench_now() - t0, dc = cpu_seconds() - c0;
        if (n != tokens) return fail("nb_gpt_generate");
        wall += dt, cpu += dc;
        t[r] = dt;
        printf("round %d: %.1f ms, %.2f tokens/s, first tokens %lld %lld %lld\n", r, dt * 1e3, (double)tokens / dt,
               (long long)out[0], (long long)out[1 < tokens ? 1 : 0], (long long)out[2 < tokens ? 2 : 0]);
    }
    const double med = bench_median(t, rounds), lo = t[0], hi = t[rounds - 1];
    const char *key = no_cache ? "gen_nocache" : "gen";
    printf("nabla %s_tokens_per_s %s %d %.3f\n", key, gc->name, threads, (double)tokens / med);
    printf("nabla %s_ms_per_token %s %d %.3f\n", key, gc->name, threads, med * 1e3 / (double)tokens);
    printf("RESULT config=%s threads=%d tokens=%lld prompt=%lld median_s=%.3f min_s=%.3f max_s=%.3f "
           "tokens_per_s=%.2f cpu_per_wall=%.2f\n",
           gc->name, threads, (long long)tokens, (long long)plen, med, lo, hi, (double)tokens / med, cpu / wall);
    free(prompt), free(out), free(t);
    nb_module_free(gpt);
    return 0;
}
