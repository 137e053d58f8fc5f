/*
 * The C ABI from C: steps compared bit for bit with a scalar C
 * re-implementation of the ADOPT update, bad input refused with its status
 * and message and nothing changed, the optimizer object's create / add /
 * step / save / load / free round trip, and the mixed-precision step.
 *
 * Build and run (from the repository root; .ci/run does this):
 *   cargo rustc --release --features capi --lib --crate-type cdylib,staticlib
 *   gcc -std=c11 -Wall -Wextra -Werror -ffp-contract=off -Iinclude \
 *       tests/c/test_capi.c target/release/libadopt.a \
 *       -lgcc_s -lutil -lrt -lpthread -lm -ldl -o target/test_capi
 *   ./target/test_capi
 *
 * -ffp-contract=off keeps gcc from fusing a*b+c on its own: the model below
 * fuses exactly where the update rule does, with fmaf.
 */
#include "adopt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            passed++;                                                     \
        } else {                                                          \
            failed++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
        }                                                                 \
    } while (0)

static uint32_t bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static float from_bits(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* Deterministic lanes of both signs and several magnitudes, some zero. */
static void fill(float *x, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) {
        uint32_t h = ((uint32_t)i * 2654435761u + seed) >> 8;
        x[i] = (float)(h % 2001) / 500.0f - 2.0f;
    }
}

/* ---- A scalar model of one step (no Nesterov, no cautious masking). ---- */

/* The f32 constants of a step after `t` steps, each derived in double and
 * rounded once, as the library does. */
typedef struct {
    float neg_lr, eps, clip, one_minus_beta1, beta2, one_minus_beta2;
    float l2, neg_lr_wd; /* 0 when unused */
    int maximize, first_step_decay;
} Constants;

static Constants constants(const AdoptHyper *h, uint64_t t) {
    Constants k;
    k.neg_lr = (float)(-h->lr);
    k.eps = (float)h->eps;
    double c = INFINITY;
    if (h->clip == ADOPT_CLIP_CONSTANT) {
        c = h->clip_scale;
    } else if (h->clip == ADOPT_CLIP_POWER) {
        c = h->clip_scale * pow((double)(t + h->clip_offset), h->clip_exponent);
    }
    k.clip = (float)c;
    k.one_minus_beta1 = (float)(1.0 - h->beta1);
    k.beta2 = (float)h->beta2;
    k.one_minus_beta2 = (float)(1.0 - h->beta2);
    k.l2 = 0.0f;
    k.neg_lr_wd = 0.0f;
    if (h->weight_decay != 0.0) {
        if (h->decouple) {
            k.neg_lr_wd = -(float)(h->lr * h->weight_decay);
        } else {
            k.l2 = (float)h->weight_decay;
        }
    }
    k.maximize = (int)h->maximize;
    k.first_step_decay = (int)h->first_step_decay;
    return k;
}

/* The update rule, one lane (README "The update rule"). */
static void model_lane(float *p, float grad, float *m, float *v, const Constants *k, uint64_t t) {
    float g = k->maximize ? -grad : grad;
    if (k->l2 != 0.0f) {
        g = fmaf(k->l2, *p, g);
    }
    if (k->neg_lr_wd != 0.0f && (t > 0 || k->first_step_decay)) {
        *p = fmaf(k->neg_lr_wd, *p, *p);
    }
    if (t == 0) {
        *v = g * g;
        return;
    }
    float denom = sqrtf(*v);
    if (denom < k->eps) {
        denom = k->eps;
    }
    float normed = g / denom;
    if (normed < -k->clip) {
        normed = -k->clip;
    }
    if (normed > k->clip) {
        normed = k->clip;
    }
    /* torch's lerp has two forms: from the start while |w| < 0.5, else from the end. */
    float w = k->one_minus_beta1;
    *m = fabsf(w) < 0.5f ? fmaf(w, normed - *m, *m) : fmaf(w - 1.0f, normed - *m, normed);
    *p = fmaf(k->neg_lr, *m, *p);
    *v = fmaf(k->one_minus_beta2 * g, g, k->beta2 * *v);
}

static void model_step(float *p, const float *g, float *m, float *v, size_t n, uint64_t *t,
                       const AdoptHyper *h) {
    Constants k = constants(h, *t);
    for (size_t i = 0; i < n; i++) {
        model_lane(&p[i], g[i], &m[i], &v[i], &k, *t);
    }
    *t += 1;
}

static int same_bits(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (bits(a[i]) != bits(b[i])) {
            fprintf(stderr, "  lane %zu: %a vs %a\n", i, (double)a[i], (double)b[i]);
            return 0;
        }
    }
    return 1;
}

static const char *msg(void) { return adopt_last_error_message(); }

enum { N = 37 };

static void test_defaults_and_version(void) {
    AdoptHyper h = adopt_hyper_default();
    CHECK(h.lr == 1e-3 && h.beta1 == 0.9 && h.beta2 == 0.9999 && h.eps == 1e-6, "defaults");
    CHECK(h.clip == ADOPT_CLIP_POWER && h.clip_scale == 1.0 && h.clip_exponent == 0.25, "clip");
    CHECK(h.decouple == 0 && h.weight_decay == 0.0, "decay");
    CHECK(strlen(adopt_version()) > 0, "version");
}

static void test_steps_match_the_model(void) {
    AdoptHyper hs[6];
    hs[0] = adopt_hyper_default();
    hs[1] = adopt_hyper_default();
    hs[1].lr = 1e-2;
    hs[1].weight_decay = 0.01;
    hs[1].decouple = 1;
    hs[2] = adopt_hyper_default();
    hs[2].lr = 3e-2;
    hs[2].beta1 = 0.8;
    hs[2].beta2 = 0.99;
    hs[2].weight_decay = 0.05;
    hs[2].maximize = 1;
    hs[2].clip = ADOPT_CLIP_CONSTANT;
    hs[2].clip_scale = 0.5;
    hs[3] = adopt_hyper_default();
    hs[3].lr = 0.1;
    hs[3].clip = ADOPT_CLIP_NONE;
    hs[3].eps = 1e-8;
    hs[4] = adopt_hyper_default(); /* beta1 <= 0.5: the lerp's second form */
    hs[4].lr = 1e-2;
    hs[4].beta1 = 0.3;
    hs[5] = adopt_hyper_default(); /* pytorch-optimizer's decay and clip schedule */
    hs[5].lr = 1e-2;
    hs[5].weight_decay = 0.1;
    hs[5].decouple = 1;
    hs[5].first_step_decay = 1;
    hs[5].clip_offset = 1;
    for (int c = 0; c < 6; c++) {
        float p[N], g[N], m[N] = {0}, v[N] = {0};
        float mp[N], mm[N] = {0}, mv[N] = {0};
        uint64_t step = 0, mstep = 0;
        fill(p, N, 100 + (uint32_t)c);
        memcpy(mp, p, sizeof p);
        for (uint32_t s = 0; s < 6; s++) {
            fill(g, N, s);
            if (s == 2) {
                g[3] = 0.0f; /* a zero gradient lane */
            }
            AdoptStatus st = adopt_step_f32(p, N, g, N, m, N, v, N, &step, &hs[c]);
            CHECK(st == ADOPT_STATUS_OK, "config %d step %u: status %d: %s", c, s, (int)st, msg());
            CHECK(strcmp(msg(), "") == 0, "message after success: %s", msg());
            model_step(mp, g, mm, mv, N, &mstep, &hs[c]);
        }
        CHECK(same_bits(p, mp, N), "config %d: params differ from the model", c);
        CHECK(same_bits(m, mm, N), "config %d: exp_avg differs from the model", c);
        CHECK(same_bits(v, mv, N), "config %d: exp_avg_sq differs from the model", c);
        CHECK(step == 6, "config %d: step %llu", c, (unsigned long long)step);
    }
}

/* A schedule of the caller's own, which the C ABI has no kind for: the
 * caller evaluates it before each step and passes the value as a constant
 * threshold. The model evaluates the same schedule at the same step. */
static double warmup_clip(uint64_t t) { return t < 3 ? 0.05 * (double)(t + 1) : 1.0; }

static void test_custom_clip_schedule_per_step(void) {
    float p[N], g[N], m[N] = {0}, v[N] = {0};
    float mp[N], mm[N] = {0}, mv[N] = {0};
    uint64_t step = 0, mstep = 0;
    AdoptHyper h = adopt_hyper_default();
    h.lr = 0.1;
    h.clip = ADOPT_CLIP_CONSTANT;
    fill(p, N, 7);
    memcpy(mp, p, sizeof p);
    for (uint32_t s = 0; s < 6; s++) {
        fill(g, N, 40 + s);
        h.clip_scale = warmup_clip(step);
        CHECK(adopt_step_f32(p, N, g, N, m, N, v, N, &step, &h) == ADOPT_STATUS_OK, "step %u: %s",
              s, msg());
        model_step(mp, g, mm, mv, N, &mstep, &h);
    }
    CHECK(same_bits(p, mp, N), "custom schedule: params differ from the model");
    CHECK(same_bits(m, mm, N), "custom schedule: exp_avg differs from the model");
}

/* Copies of a step's buffers, to prove an error changed nothing. */
typedef struct {
    float p[4], g[4], m[4], v[4];
    uint64_t step;
} Bufs;

/* The buffers every bad-input call starts from (and must leave as they were). */
static void pristine(Bufs *b) {
    fill(b->p, 4, 1);
    fill(b->g, 4, 2);
    fill(b->m, 4, 3);
    for (int i = 0; i < 4; i++) {
        b->v[i] = b->m[i] * b->m[i];
    }
    b->step = 3;
}

static void expect_error(Bufs *b, AdoptStatus got, AdoptStatus want, const char *text,
                         const char *what) {
    Bufs before;
    pristine(&before);
    CHECK(got == want, "%s: status %d, want %d (%s)", what, (int)got, (int)want, msg());
    CHECK(strstr(msg(), text) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg(), text);
    CHECK(memcmp(b->p, before.p, sizeof b->p) == 0, "%s: params changed", what);
    CHECK(memcmp(b->g, before.g, sizeof b->g) == 0, "%s: grads changed", what);
    CHECK(memcmp(b->m, before.m, sizeof b->m) == 0, "%s: exp_avg changed", what);
    CHECK(memcmp(b->v, before.v, sizeof b->v) == 0, "%s: exp_avg_sq changed", what);
    CHECK(b->step == 3, "%s: step changed", what);
}

static void test_bad_input_changes_nothing(void) {
    Bufs b;
    pristine(&b);
    AdoptHyper h = adopt_hyper_default();
    AdoptHyper bad_lr = h;
    bad_lr.lr = -1.0;
    AdoptHyper nan_eps = h;
    nan_eps.eps = NAN;
    AdoptHyper bad_flag = h;
    bad_flag.nesterov = 5;
    AdoptHyper bad_clip = h;
    bad_clip.clip = 3;
    AdoptHyper huge_lr = h; /* finite as a double, beyond the largest float */
    huge_lr.lr = 1e39;
    AdoptHyper huge_rate = h;
    huge_rate.lr = 1e20;
    huge_rate.weight_decay = 1e20;
    huge_rate.decouple = 1;
    AdoptHyper old_size = h; /* a struct from another header */
    old_size.size = 96;

    expect_error(&b, adopt_step_f32(NULL, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &h),
                 ADOPT_STATUS_NULL_POINTER, "params is a null pointer", "null params");
    expect_error(&b, adopt_step_f32(b.p, 4, NULL, 4, b.m, 4, b.v, 4, &b.step, &h),
                 ADOPT_STATUS_NULL_POINTER, "grads is a null pointer", "null grads");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, NULL, &h),
                 ADOPT_STATUS_NULL_POINTER, "step is a null pointer", "null step");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, NULL),
                 ADOPT_STATUS_NULL_POINTER, "hyper is a null pointer", "null hyper");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 3, b.m, 4, b.v, 4, &b.step, &h),
                 ADOPT_STATUS_LENGTH_MISMATCH,
                 "grads has 3 lanes, expected 4 (the length of params)", "short grads");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 2, &b.step, &h),
                 ADOPT_STATUS_LENGTH_MISMATCH, "exp_avg_sq has 2 lanes, expected 4",
                 "short exp_avg_sq");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &bad_lr),
                 ADOPT_STATUS_INVALID_HYPER, "invalid hyperparameter lr = -1", "negative lr");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &nan_eps),
                 ADOPT_STATUS_INVALID_HYPER, "eps = NaN", "NaN eps");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &huge_lr),
                 ADOPT_STATUS_HYPER_OVERFLOW, "lr = 1e39 overflows f32", "lr overflows float");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &huge_rate),
                 ADOPT_STATUS_HYPER_OVERFLOW, "= 1e40 overflows f32", "lr*wd overflows float");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &old_size),
                 ADOPT_STATUS_INVALID_ARGUMENT, "hyper.size is 96", "struct size");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &bad_flag),
                 ADOPT_STATUS_INVALID_ARGUMENT, "hyper.nesterov is 5: must be 0 or 1", "flag");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &bad_clip),
                 ADOPT_STATUS_INVALID_ARGUMENT, "hyper.clip is 3", "clip kind");
    expect_error(&b, adopt_step_f32(b.p, 4, b.g, 4, b.p, 4, b.v, 4, &b.step, &h),
                 ADOPT_STATUS_INVALID_ARGUMENT, "params and exp_avg overlap", "aliased");
    expect_error(&b, adopt_step_f32(b.m + 1, 3, b.g, 3, b.m, 3, b.v, 3, &b.step, &h),
                 ADOPT_STATUS_INVALID_ARGUMENT, "overlap", "partly aliased");

    /* The same buffers still step. */
    CHECK(adopt_step_f32(b.p, 4, b.g, 4, b.m, 4, b.v, 4, &b.step, &h) == ADOPT_STATUS_OK,
          "step after errors: %s", msg());
    CHECK(b.step == 4 && strcmp(msg(), "") == 0, "step count and message after success");
    /* Empty buffers may be NULL. */
    uint64_t t = 0;
    CHECK(adopt_step_f32(NULL, 0, NULL, 0, NULL, 0, NULL, 0, &t, &h) == ADOPT_STATUS_OK && t == 1,
          "empty step: %s", msg());
}

static uint16_t bf16_round(float x) { /* to nearest, ties to even (finite x) */
    uint32_t b = bits(x);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static void test_bf16_is_the_f32_step_rounded(void) {
    AdoptHyper h = adopt_hyper_default();
    h.lr = 0.05;
    uint16_t p[N], g[N];
    float wp[N], wg[N], m[N] = {0}, v[N] = {0}, wm[N] = {0}, wv[N] = {0};
    uint64_t step = 0, wstep = 0;
    fill(wp, N, 5);
    for (int i = 0; i < N; i++) {
        p[i] = bf16_round(wp[i]);
    }
    for (uint32_t s = 0; s < 4; s++) {
        fill(wg, N, s + 20);
        for (int i = 0; i < N; i++) {
            g[i] = bf16_round(wg[i]);
            wg[i] = from_bits((uint32_t)g[i] << 16); /* the gradient the step sees */
            wp[i] = from_bits((uint32_t)p[i] << 16); /* the widened parameter */
        }
        AdoptStatus st = adopt_step_bf16(p, N, g, N, m, N, v, N, &step, &h,
                                         ADOPT_ROUNDING_NEAREST_EVEN, 0);
        CHECK(st == ADOPT_STATUS_OK, "bf16 step: %s", msg());
        CHECK(adopt_step_f32(wp, N, wg, N, wm, N, wv, N, &wstep, &h) == ADOPT_STATUS_OK,
              "f32 step: %s", msg());
        int same = 1;
        for (int i = 0; i < N; i++) {
            same &= p[i] == bf16_round(wp[i]);
        }
        CHECK(same, "bf16 step %u differs from the f32 step rounded", s);
        CHECK(same_bits(m, wm, N) && same_bits(v, wv, N), "bf16 state differs at step %u", s);
    }
    CHECK(adopt_step_bf16(p, N, g, N, m, N, v, N, &step, &h, 7, 0) ==
              ADOPT_STATUS_INVALID_ARGUMENT,
          "bad rounding");
}

static void test_optimizer_round_trip(void) {
    AdoptOptimizer *opt = NULL;
    CHECK(adopt_optimizer_new(&opt) == ADOPT_STATUS_OK && opt != NULL, "new: %s", msg());
    AdoptHyper body = adopt_hyper_default();
    body.lr = 1e-2;
    body.weight_decay = 0.01;
    body.decouple = 1;
    AdoptHyper head = adopt_hyper_default();
    uint32_t gb = 99, gh = 99, w = 99, bias = 99;
    CHECK(adopt_optimizer_add_group(opt, &body, &gb) == ADOPT_STATUS_OK && gb == 0, "group 0");
    CHECK(adopt_optimizer_add_group(opt, &head, &gh) == ADOPT_STATUS_OK && gh == 1, "group 1");
    CHECK(adopt_optimizer_add_param(opt, gb, N, "layer.weight", &w) == ADOPT_STATUS_OK && w == 0,
          "param 0: %s", msg());
    CHECK(adopt_optimizer_add_param(opt, gh, 5, NULL, &bias) == ADOPT_STATUS_OK && bias == 1,
          "param 1: %s", msg());

    /* The optimizer's steps equal single steps with separate state. */
    float pw[N], pb[5], gw[N], gbias[5];
    float sw[N], sb[5], mw[N] = {0}, vw[N] = {0}, mb[5] = {0}, vb[5] = {0};
    uint64_t tw = 0, tb = 0;
    fill(pw, N, 1);
    fill(pb, 5, 2);
    memcpy(sw, pw, sizeof pw);
    memcpy(sb, pb, sizeof pb);
    for (uint32_t s = 0; s < 4; s++) {
        fill(gw, N, 10 + s);
        fill(gbias, 5, 20 + s);
        int with_bias = s != 1; /* the bias has no gradient at step 1 */
        AdoptItem items[2] = {
            {.param = w, .params = pw, .params_len = N, .grads = gw, .grads_len = N},
            {.param = bias, .params = pb, .params_len = 5, .grads = with_bias ? gbias : NULL,
             .grads_len = with_bias ? 5 : 0},
        };
        CHECK(adopt_optimizer_step(opt, items, 2) == ADOPT_STATUS_OK, "step %u: %s", s, msg());
        adopt_step_f32(sw, N, gw, N, mw, N, vw, N, &tw, &body);
        if (with_bias) {
            adopt_step_f32(sb, 5, gbias, 5, mb, 5, vb, 5, &tb, &head);
        }
    }
    CHECK(same_bits(pw, sw, N) && same_bits(pb, sb, 5), "optimizer vs single steps");
    uint64_t steps = 0;
    CHECK(adopt_optimizer_param_step(opt, bias, &steps) == ADOPT_STATUS_OK && steps == 3,
          "bias steps %llu", (unsigned long long)steps);

    /* Errors: unknown and repeated ids, a wrong length; nothing changes. */
    float keep[N];
    memcpy(keep, pw, sizeof pw);
    AdoptItem unknown = {.param = 7, .params = pw, .params_len = N, .grads = gw, .grads_len = N};
    CHECK(adopt_optimizer_step(opt, &unknown, 1) == ADOPT_STATUS_UNKNOWN_PARAM, "unknown id");
    CHECK(strcmp(msg(), "unknown parameter id 7") == 0, "message: %s", msg());
    AdoptItem twice[2] = {
        {.param = w, .params = pw, .params_len = N, .grads = gw, .grads_len = N},
        {.param = w, .params = sw, .params_len = N, .grads = gw, .grads_len = N},
    };
    CHECK(adopt_optimizer_step(opt, twice, 2) == ADOPT_STATUS_DUPLICATE_PARAM, "duplicate");
    AdoptItem short_grads = {.param = w, .params = pw, .params_len = N, .grads = gw,
                             .grads_len = N - 1};
    CHECK(adopt_optimizer_step(opt, &short_grads, 1) == ADOPT_STATUS_LENGTH_MISMATCH,
          "short grads");
    CHECK(memcmp(keep, pw, sizeof pw) == 0, "params changed by a refused step");
    AdoptHyper bad = body;
    bad.beta1 = 1.5;
    CHECK(adopt_optimizer_set_hyper(opt, gb, &bad) == ADOPT_STATUS_INVALID_HYPER, "set bad");
    AdoptHyper got;
    CHECK(adopt_optimizer_get_hyper(opt, gb, &got) == ADOPT_STATUS_OK && got.beta1 == 0.9,
          "hyper unchanged");
    CHECK(adopt_optimizer_add_param(opt, 9, 1, NULL, &w) == ADOPT_STATUS_UNKNOWN_GROUP && w == 0,
          "unknown group");
    CHECK(adopt_optimizer_step(NULL, NULL, 0) == ADOPT_STATUS_NULL_POINTER, "null optimizer");

    /* Save: size query, too small a buffer, then the real thing. */
    size_t len = 0;
    CHECK(adopt_optimizer_save(opt, NULL, 0, &len) == ADOPT_STATUS_OK && len > 20, "size query");
    uint8_t *ckpt = malloc(len);
    uint8_t small[8];
    memset(small, 0xAA, sizeof small);
    size_t len2 = 0;
    CHECK(adopt_optimizer_save(opt, small, sizeof small, &len2) == ADOPT_STATUS_BUFFER_TOO_SMALL &&
              len2 == len,
          "too small");
    CHECK(small[0] == 0xAA && small[7] == 0xAA, "small buffer written");
    CHECK(adopt_optimizer_save(opt, ckpt, len, &len2) == ADOPT_STATUS_OK && len2 == len, "save");

    /* Load into a fresh optimizer: same counts, same checkpoint, same steps. */
    AdoptOptimizer *restored = NULL;
    CHECK(adopt_optimizer_new(&restored) == ADOPT_STATUS_OK, "new restored");
    CHECK(adopt_optimizer_load(restored, ckpt, len) == ADOPT_STATUS_OK, "load: %s", msg());
    size_t groups = 0, params = 0;
    CHECK(adopt_optimizer_counts(restored, &groups, &params) == ADOPT_STATUS_OK && groups == 2 &&
              params == 2,
          "counts");
    uint8_t *again = malloc(len);
    CHECK(adopt_optimizer_save(restored, again, len, &len2) == ADOPT_STATUS_OK && len2 == len &&
              memcmp(ckpt, again, len) == 0,
          "re-saved checkpoint differs");
    float a[N], b[N];
    memcpy(a, pw, sizeof pw);
    memcpy(b, pw, sizeof pw);
    AdoptItem ia = {.param = 0, .params = a, .params_len = N, .grads = gw, .grads_len = N};
    AdoptItem ib = {.param = 0, .params = b, .params_len = N, .grads = gw, .grads_len = N};
    CHECK(adopt_optimizer_step(opt, &ia, 1) == ADOPT_STATUS_OK &&
              adopt_optimizer_step(restored, &ib, 1) == ADOPT_STATUS_OK && same_bits(a, b, N),
          "restored optimizer steps differently");

    /* A corrupt checkpoint is refused and changes nothing. */
    ckpt[len / 2] ^= 0x10;
    CHECK(adopt_optimizer_load(restored, ckpt, len) == ADOPT_STATUS_CHECKPOINT, "corrupt");
    CHECK(strstr(msg(), "checksum mismatch") != NULL, "message: %s", msg());
    CHECK(adopt_optimizer_param_step(restored, 0, &steps) == ADOPT_STATUS_OK && steps == 5,
          "state after a refused load");

    free(ckpt);
    free(again);
    adopt_optimizer_free(opt);
    adopt_optimizer_free(restored);
    adopt_optimizer_free(NULL);
}

/* Mixed precision: scan for inf, skip the step it poisons (nothing moves),
 * and a scaled step equals an unscaled one on the unscaled gradients when the
 * scale is a power of two (exact in f32). */
static void test_mixed_precision(void) {
    AdoptHyper h = adopt_hyper_default();
    AdoptOptimizer *scaled = NULL, *plain = NULL;
    CHECK(adopt_optimizer_new(&scaled) == ADOPT_STATUS_OK && adopt_optimizer_new(&plain) == ADOPT_STATUS_OK,
          "new");
    uint32_t g0 = 9, w0 = 9;
    CHECK(adopt_optimizer_add_group(scaled, &h, &g0) == ADOPT_STATUS_OK &&
              adopt_optimizer_add_param(scaled, g0, N, NULL, &w0) == ADOPT_STATUS_OK,
          "setup scaled");
    CHECK(adopt_optimizer_add_group(plain, &h, &g0) == ADOPT_STATUS_OK &&
              adopt_optimizer_add_param(plain, g0, N, NULL, &w0) == ADOPT_STATUS_OK,
          "setup plain");
    float a[N], b[N], big[N], small[N];
    for (int i = 0; i < N; i++) {
        a[i] = b[i] = 0.05f * (float)(i - N / 2);
        small[i] = 0.01f * (float)((i * 7) % 13 - 6);
        big[i] = small[i] * 1024.0f; /* the loss scaled by 1024 */
    }
    uint32_t found = 7;
    for (int s = 0; s < 3; s++) {
        CHECK(adopt_grads_nonfinite(big, N, &found) == ADOPT_STATUS_OK && found == 0, "finite scan");
        AdoptItem ia = {.param = 0, .params = a, .params_len = N, .grads = big, .grads_len = N};
        AdoptItem ib = {.param = 0, .params = b, .params_len = N, .grads = small, .grads_len = N};
        CHECK(adopt_optimizer_step_scaled(scaled, &ia, 1, 1.0f / 1024.0f, found) == ADOPT_STATUS_OK,
              "scaled step: %s", msg());
        CHECK(adopt_optimizer_step(plain, &ib, 1) == ADOPT_STATUS_OK, "plain step");
    }
    CHECK(same_bits(a, b, N), "scaled and unscaled steps differ");

    /* An overflowed gradient: found, and the step skipped entirely. */
    big[5] = INFINITY;
    CHECK(adopt_grads_nonfinite(big, N, &found) == ADOPT_STATUS_OK && found == 1, "inf found");
    float before[N];
    memcpy(before, a, sizeof a);
    AdoptItem ia = {.param = 0, .params = a, .params_len = N, .grads = big, .grads_len = N};
    CHECK(adopt_optimizer_step_scaled(scaled, &ia, 1, 1.0f / 1024.0f, found) == ADOPT_STATUS_OK,
          "skipped step");
    uint64_t steps = 0;
    CHECK(same_bits(a, before, N) && adopt_optimizer_param_step(scaled, 0, &steps) == ADOPT_STATUS_OK &&
              steps == 3,
          "a skipped step changed something");
    CHECK(adopt_optimizer_step_scaled(scaled, &ia, 1, 1.0f, 2) == ADOPT_STATUS_INVALID_ARGUMENT &&
              strstr(msg(), "found_inf") != NULL,
          "bad found_inf: %s", msg());
    adopt_optimizer_free(scaled);
    adopt_optimizer_free(plain);
}

/* Every layout from C: a row-sparse table whose listed rows step exactly
 * as the model steps each row as a dense buffer (rows not listed stay),
 * and bf16 parameters as adopt_step_bf16_v2 steps them. */
static void test_layouts_and_entries(void) {
    enum { ROWS = 5, DIM = 3 };
    AdoptHyper h = adopt_hyper_default();
    h.lr = 0.05;
    AdoptOptimizer *opt = NULL;
    uint32_t g = 9, table = 9, w = 9;
    AdoptLayout rows = adopt_layout_rows(ROWS, DIM);
    AdoptLayout bf = adopt_layout_dense(4);
    bf.params = ADOPT_DTYPE_BF16;
    bf.grads = ADOPT_DTYPE_BF16;
    CHECK(adopt_optimizer_new(&opt) == ADOPT_STATUS_OK &&
              adopt_optimizer_add_group(opt, &h, &g) == ADOPT_STATUS_OK &&
              adopt_optimizer_add_param_layout(opt, g, &rows, "entities", &table) == ADOPT_STATUS_OK &&
              adopt_optimizer_add_param_layout(opt, g, &bf, NULL, &w) == ADOPT_STATUS_OK,
          "layout setup: %s", msg());
    float t[ROWS * DIM], mt[ROWS * DIM], mm[ROWS * DIM] = {0}, mv[ROWS * DIM] = {0};
    uint64_t msteps[ROWS] = {0};
    fill(t, ROWS * DIM, 77);
    memcpy(mt, t, sizeof t);
    uint16_t pb[4] = {0x3f80, 0x4000, 0xbf80, 0x3e80}, qb[4];
    memcpy(qb, pb, sizeof pb);
    uint16_t gbf[4] = {0x3e00, 0xbe80, 0x3f00, 0x3c00};
    float qm[4] = {0}, qv[4] = {0};
    uint64_t qstep = 0;
    for (uint32_t s = 0; s < 4; s++) {
        uint32_t listed[2] = {s % ROWS, 3};
        float values[2 * DIM];
        fill(values, 2 * DIM, 500 + s);
        AdoptEntry entries[2] = {
            {.param = table, .params_dtype = ADOPT_DTYPE_F32, .params = t, .params_len = ROWS * DIM,
             .grads_kind = ADOPT_GRADS_ROWS, .grads_dtype = ADOPT_DTYPE_F32, .grads = values,
             .grads_len = 2 * DIM, .rows = listed, .rows_len = 2},
            {.param = w, .params_dtype = ADOPT_DTYPE_BF16, .params = pb, .params_len = 4,
             .grads_kind = ADOPT_GRADS_DENSE, .grads_dtype = ADOPT_DTYPE_BF16, .grads = gbf,
             .grads_len = 4, .rows = NULL, .rows_len = 0},
        };
        CHECK(adopt_optimizer_step_entries(opt, entries, 2, 1.0f, 0) == ADOPT_STATUS_OK,
              "entries step %u: %s", s, msg());
        /* The model: each listed row as a dense buffer; a row listed twice
         * steps once, with its blocks summed. */
        if (listed[0] == listed[1]) {
            for (int j = 0; j < DIM; j++) {
                values[j] += values[DIM + j];
            }
        }
        for (int r = 0; r < (listed[0] == listed[1] ? 1 : 2); r++) {
            uint32_t row = listed[r];
            model_step(mt + row * DIM, values + r * DIM, mm + row * DIM, mv + row * DIM, DIM,
                       &msteps[row], &h);
        }
        CHECK(adopt_step_bf16_v2(qb, gbf, qm, qv, 4, &qstep, &h, ADOPT_ROUNDING_NEAREST_EVEN, 0) ==
                  ADOPT_STATUS_OK,
              "bf16 v2 step: %s", msg());
    }
    CHECK(same_bits(t, mt, ROWS * DIM), "table rows differ from the model");
    CHECK(memcmp(pb, qb, sizeof pb) == 0, "bf16 entries differ from adopt_step_bf16_v2");
    uint64_t steps = 0;
    CHECK(adopt_optimizer_param_step(opt, table, &steps) == ADOPT_STATUS_LAYOUT_MISMATCH,
          "a table's step count: %s", msg());
    /* A row the table does not have: refused, nothing changed. */
    float before[ROWS * DIM];
    memcpy(before, t, sizeof t);
    uint32_t bad_row = ROWS;
    float block[DIM] = {1, 1, 1};
    AdoptEntry bad = {.param = table, .params_dtype = ADOPT_DTYPE_F32, .params = t,
                      .params_len = ROWS * DIM, .grads_kind = ADOPT_GRADS_ROWS,
                      .grads_dtype = ADOPT_DTYPE_F32, .grads = block, .grads_len = DIM,
                      .rows = &bad_row, .rows_len = 1};
    CHECK(adopt_optimizer_step_entries(opt, &bad, 1, 1.0f, 0) == ADOPT_STATUS_ROW_OUT_OF_RANGE &&
              strstr(msg(), "row 5 is out of range") != NULL,
          "bad row: %s", msg());
    CHECK(same_bits(t, before, ROWS * DIM), "a refused step changed the table");
    adopt_optimizer_free(opt);
}

int main(void) {
    test_defaults_and_version();
    test_steps_match_the_model();
    test_custom_clip_schedule_per_step();
    test_bad_input_changes_nothing();
    test_bf16_is_the_f32_step_rounded();
    test_optimizer_round_trip();
    test_mixed_precision();
    test_layouts_and_entries();
    printf("adopt %s C ABI checks\n%d passed, %d failed\n", adopt_version(), passed, failed);
    return failed == 0 ? 0 : 1;
}
