/* Batch-1 decoding of a stacked LSTM on the CPU, outside TensorFlow.

   At batch 1 every token reads all the weights once, so the decoding rate is set by how fast
   the weights come from memory. XLA runs each matrix-vector product on one thread and reads
   the weights from the shared cache; here the weights of every layer are split by output unit
   among worker threads, each thread's slice packed contiguously, and the whole token loop runs in
   C: the layers,
   the output layer, temperature, top-k and top-p, and the draw. The threads meet at a spinning
   barrier after each layer.

   The model is the one ``generator.models.lstm.LSTMStack`` and ``Decoder`` run: gates in Keras's
   order (input, forget, cell, output) with the cell gate's columns doubled, so that one sigmoid
   gives every gate (tanh(z) = 2 sigmoid(2z) - 1); the first layer's input projection of every
   token is a row of ``table``; after the LSTMs, one or two dense stages (a tied model's
   projection, then the logits).

   Loaded with ctypes by ``generator.generation.native``; no Python headers are used. */

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

#define MAX_LAYERS 8
#define MAX_STAGES 2
#define MAX_THREADS 16
#define ALIGN 64
#define WHOLE_LAST_BYTES (256 * 1024) /* a last stage this small is computed whole by every thread */
#define SPINS_BEFORE_YIELD 20000 /* about 0.1 to 1 ms of pauses */

typedef struct {
    float value;
    int index;
} Ranked;

/* One thread's share of a matrix-vector product y = b + x W: the packed columns it owns. */
typedef struct {
    int cols; /* the thread's columns */
    float *w; /* [the input width, cols] */
    float *bias;    /* [cols]: the bias, or for the first layer, the table [vocab, cols] */
} Slice;

typedef struct {
    int layers, stages, vocab, threads;
    int units[MAX_LAYERS];
    int stage_in[MAX_STAGES], stage_out[MAX_STAGES];
    int unit_start[MAX_LAYERS][MAX_THREADS + 1];   /* the units each thread computes */
    int column_start[MAX_STAGES][MAX_THREADS + 1]; /* the output columns each thread computes */
    Slice layer[MAX_LAYERS][MAX_THREADS];
    Slice stage[MAX_STAGES][MAX_THREADS];
    float *h[MAX_LAYERS][2]; /* each layer's output, double-buffered: the recurrent input is the old one */
    float *c[MAX_LAYERS];
    float *stage_y[MAX_STAGES]; /* the last stage's output is the logits */
    int whole_last;             /* every thread computes all of a small last stage: one barrier less */
    float *logits_of[MAX_THREADS]; /* the logits each thread draws from: its own copy when whole_last */
    float *scratch[MAX_THREADS]; /* per-thread gate pre-activations */
    float *probs;               /* per-thread sampling buffers: [threads, 2 * vocab] */
    Ranked *order;

    /* the job of one generate call */
    int n_tokens, greedy, top_k, parity;
    float temperature, top_p;
    uint64_t seed;
    int64_t first_step;
    int32_t *out;
    const int32_t *given; /* priming: the tokens to run through, none drawn */

    /* the barrier and the worker threads */
    atomic_int arrived;
    atomic_int sense;
    pthread_t workers[MAX_THREADS];
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int job, quit;
} Net;

static void *aligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, ALIGN, bytes ? (bytes + ALIGN - 1) / ALIGN * ALIGN : ALIGN) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

/* exp(x) for x in about [-87, 88]: 2^(x log2 e) as 2^n times a degree-6 polynomial of the
   fraction; relative error about 2e-7, and written so that the compiler vectorises it. */
static inline float fast_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float t = x * 1.44269504088896341f;
    float n = floorf(t + 0.5f);
    float f = (t - n) * 0.69314718055994531f; /* |f| <= ln(2) / 2 */
    float p = 1.0f + f * (1.0f + f * (0.5f + f * (0.16666667f + f * (0.041666668f + f * (0.0083333338f + f * 0.0013888889f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

/* y[0:cols] += x[0:rows] W, W [rows, cols] row-major; four rows at a time. */
VECTOR_CLONES static void axpy_rows(const float *restrict x, int rows, const float *restrict w, int cols,
                                      float *restrict y) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const float x0 = x[r], x1 = x[r + 1], x2 = x[r + 2], x3 = x[r + 3];
        const float *w0 = w + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        for (int j = 0; j < cols; j++) y[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
    }
    for (; r < rows; r++) {
        const float xr = x[r];
        const float *wr = w + (size_t)r * cols;
        for (int j = 0; j < cols; j++) y[j] += xr * wr[j];
    }
}

static void product(const Slice *s, const float *x, int x_offset_rows, int rows, float *y) {
    axpy_rows(x, rows, s->w + (size_t)x_offset_rows * s->cols, s->cols, y);
}

/* One LSTM cell over a thread's n units: z [4n] (gates i, f, 2*cell, o) -> h, c of those units. */
VECTOR_CLONES static void cell(float *restrict z, int n, float *restrict h, float *restrict c) {
    for (int j = 0; j < 4 * n; j++) z[j] = 1.0f / (1.0f + fast_exp(-z[j]));
    for (int j = 0; j < n; j++) {
        float cj = z[n + j] * c[j] + z[j] * (2.0f * z[2 * n + j] - 1.0f);
        c[j] = cj;
        float s = 1.0f / (1.0f + fast_exp(-2.0f * cj));
        h[j] = z[3 * n + j] * (2.0f * s - 1.0f);
    }
}

/* A sense-reversing barrier: the threads of one job spin until the last one arrives. */
static void barrier(Net *net, int *local_sense) {
    if (net->threads == 1) return;
    int sense = !*local_sense;
    *local_sense = sense;
    if (atomic_fetch_add_explicit(&net->arrived, 1, memory_order_acq_rel) == net->threads - 1) {
        atomic_store_explicit(&net->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&net->sense, sense, memory_order_release);
    } else {
        for (long spins = 0; atomic_load_explicit(&net->sense, memory_order_acquire) != sense; spins++) {
            if (spins > SPINS_BEFORE_YIELD)
                sched_yield(); /* another process holds the core the last thread needs */
#if defined(__x86_64__) || defined(__i386__)
            else
                __builtin_ia32_pause();
#endif
        }
    }
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int more_likely_first(const void *a, const void *b) {
    float x = ((const Ranked *)a)->value, y = ((const Ranked *)b)->value;
    return (x < y) - (x > y);
}

/* ``order`` [V] = the indices of ``values`` from the largest value to the smallest. */
static void rank(const float *values, int V, Ranked *order) {
    for (int v = 0; v < V; v++) {
        order[v].value = values[v];
        order[v].index = v;
    }
    qsort(order, V, sizeof(Ranked), more_likely_first);
}

/* The next token from the logits, the same rule as ``generator.generation.sampling``'s samplers:
   divide by the temperature, keep the top k, then the smallest set of most likely tokens whose
   probability reaches top_p, then inverse-CDF sampling with a uniform drawn from (seed, step). */
static int32_t draw(Net *net, const float *logits, float *x, Ranked *order, int64_t step) {
    const int V = net->vocab;
    const float neg = -1e30f;
    if (net->greedy) {
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        return best;
    }
    for (int v = 0; v < V; v++) x[v] = logits[v] / net->temperature;
    if (net->top_k > 0 && net->top_k < V) { /* keep those at least as large as the k-th largest */
        rank(x, V, order);
        float kth = order[net->top_k - 1].value;
        for (int v = 0; v < V; v++)
            if (x[v] < kth) x[v] = neg;
    }
    float top = neg;
    for (int v = 0; v < V; v++) top = x[v] > top ? x[v] : top;
    float *p = x + V;
    for (int v = 0; v < V; v++) p[v] = x[v] > 0.5f * neg ? fast_exp(x[v] - top) : 0.0f;
    if (net->top_p < 1.0f) { /* drop the tokens once the mass of strictly more likely ones reaches p */
        float total = 0.0f;
        for (int v = 0; v < V; v++) total += p[v];
        rank(p, V, order);
        float before = 0.0f;
        for (int i = 0; i < V; i++) {
            if (before >= net->top_p * total) p[order[i].index] = 0.0f;
            before += order[i].value;
        }
    }
    float total = 0.0f;
    for (int v = 0; v < V; v++) total += p[v];
    uint64_t bits = splitmix64(net->seed ^ splitmix64((uint64_t)step));
    float threshold = (float)(bits >> 40) * (1.0f / 16777216.0f) * total;
    float cumulative = 0.0f;
    int last = 0;
    for (int v = 0; v < V; v++) {
        if (p[v] <= 0.0f) continue;
        cumulative += p[v];
        last = v;
        if (cumulative > threshold) return v;
    }
    return last;
}

/* One thread's part of a generate call. */
static void run(Net *net, int t) {
    int local_sense = atomic_load(&net->sense);
    int parity = net->parity;
    const int n_tokens = net->n_tokens;
    const int32_t *given = net->given;
    const int L = net->layers, S = net->stages;
    float *z = net->scratch[t];
    float *sample_x = net->probs + (size_t)t * 2 * net->vocab;
    Ranked *order = net->order + (size_t)t * net->vocab;
    float *logits = net->logits_of[t];
    for (int i = 0; i < n_tokens; i++) {
        /* every thread draws the same token from the same logits: no barrier needed for it */
        const int32_t token = given ? given[i] : draw(net, logits, sample_x, order, net->first_step + i);
        if (!given && t == 0) net->out[i] = token;
        const float *below = NULL;
        for (int l = 0; l < L; l++) {
            const int a = net->unit_start[l][t], n = net->unit_start[l][t + 1] - a, U = net->units[l];
            const Slice *s = &net->layer[l][t];
            if (n > 0) {
                if (l == 0) {
                    memcpy(z, s->bias + (size_t)token * 4 * n, sizeof(float) * 4 * n);
                    product(s, net->h[0][parity], 0, U, z);
                } else {
                    const int B = net->units[l - 1];
                    memcpy(z, s->bias, sizeof(float) * 4 * n);
                    product(s, below, 0, B, z);
                    product(s, net->h[l][parity], B, U, z);
                }
                cell(z, n, net->h[l][!parity] + a, net->c[l] + a);
            }
            below = net->h[l][!parity];
            barrier(net, &local_sense);
        }
        if (given && i < n_tokens - 1) { /* priming needs the logits after the last token only */
            parity = !parity;
            continue;
        }
        const float *x = below;
        for (int k = 0; k < S; k++) {
            const int whole = k == S - 1 && net->whole_last;
            const int a = whole ? 0 : net->column_start[k][t];
            const int n = whole ? net->stage_out[k] : net->column_start[k][t + 1] - a;
            float *y = (whole ? logits : net->stage_y[k]) + a;
            if (n > 0) {
                memcpy(y, net->stage[k][t].bias, sizeof(float) * n);
                product(&net->stage[k][t], x, 0, net->stage_in[k], y);
            }
            if (!whole) barrier(net, &local_sense); /* a whole stage is this thread's alone */
            x = net->stage_y[k];
        }
        parity = !parity;
    }
    barrier(net, &local_sense); /* every thread done before the caller reads the states or starts another job */
}

static void *worker(void *arg) {
    Net *net = ((void **)arg)[0];
    int t = (int)(intptr_t)((void **)arg)[1];
    free(arg);
    int seen = 0;
    for (;;) {
        pthread_mutex_lock(&net->lock);
        while (net->job == seen && !net->quit) pthread_cond_wait(&net->wake, &net->lock);
        int quit = net->quit;
        seen = net->job;
        pthread_mutex_unlock(&net->lock);
        if (quit) return NULL;
        run(net, t);
    }
}

/* Splits [0, n) among threads in pieces that are multiples of 16 where possible. */
static void split(int n, int threads, int *start) {
    int chunks = (n + 15) / 16;
    for (int t = 0; t <= threads; t++) {
        int at = (int)((long)chunks * t / threads) * 16;
        start[t] = at < n ? at : n;
    }
}

/* dst [rows, cols] = the columns ``col_map[0:cols]`` of src [rows, full_cols]. */
static void gather_columns(float *dst, const float *src, int rows, int full_cols, const int *col_map, int cols) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) dst[(size_t)r * cols + j] = src[(size_t)r * full_cols + col_map[j]];
}

void lstm_net_free(void *handle);

/* Builds the net from the decoder's float32 arrays (row-major, cell gate doubled):
   table [vocab, 4 U0] (the first layer's projection with its bias), recurrent[l] [U_l, 4 U_l],
   kernel[l] [U_{l-1}, 4 U_l] and bias[l] [4 U_l] for l >= 1, then each stage's kernel
   [in, out] and bias [out]. Returns NULL when memory runs out or a size is out of range. */
void *lstm_net_create(int layers, const int *units, int vocab, int stages, const int *stage_out,
                      const float *table, const float *const *recurrent, const float *const *kernel,
                      const float *const *bias, const float *const *stage_kernel, const float *const *stage_bias,
                      int threads) {
    if (layers < 1 || layers > MAX_LAYERS || stages < 1 || stages > MAX_STAGES || threads < 1 || threads > MAX_THREADS)
        return NULL;
    Net *net = calloc(1, sizeof(Net));
    if (!net) return NULL;
    net->layers = layers;
    net->stages = stages;
    net->vocab = vocab;
    net->threads = threads;
    int widest = 0, ok = 1;
    for (int l = 0; l < layers; l++) {
        const int U = units[l];
        net->units[l] = U;
        split(U, threads, net->unit_start[l]);
        for (int i = 0; i < 2; i++) ok &= (net->h[l][i] = aligned(sizeof(float) * U)) != NULL;
        ok &= (net->c[l] = aligned(sizeof(float) * U)) != NULL;
        widest = 4 * U > widest ? 4 * U : widest;
    }
    int columns = widest; /* the most columns one slice gathers */
    for (int k = 0; k < stages; k++) columns = stage_out[k] > columns ? stage_out[k] : columns;
    int *col_map = malloc(sizeof(int) * (size_t)columns);
    ok &= col_map != NULL;
    for (int l = 0; ok && l < layers; l++) {
        const int U = units[l], B = l ? units[l - 1] : 0;
        for (int t = 0; ok && t < threads; t++) {
            const int a = net->unit_start[l][t], n = net->unit_start[l][t + 1] - a;
            Slice *s = &net->layer[l][t];
            for (int g = 0; g < 4; g++)
                for (int j = 0; j < n; j++) col_map[g * n + j] = g * U + a + j;
            /* the thread's columns of [kernel; recurrent], rows of the layer below first */
            const int bias_rows = l ? 1 : vocab; /* the first layer's table holds its bias */
            s->cols = 4 * n;
            ok &= (s->w = aligned(sizeof(float) * (size_t)(B + U) * 4 * n)) != NULL;
            ok &= (s->bias = aligned(sizeof(float) * (size_t)bias_rows * 4 * n)) != NULL;
            if (!ok) break;
            if (B) gather_columns(s->w, kernel[l], B, 4 * U, col_map, 4 * n);
            gather_columns(s->w + (size_t)B * 4 * n, recurrent[l], U, 4 * U, col_map, 4 * n);
            gather_columns(s->bias, l ? bias[l] : table, bias_rows, 4 * U, col_map, 4 * n);
        }
    }
    int in = units[layers - 1];
    for (int k = 0; ok && k < stages; k++) {
        const int O = stage_out[k];
        net->stage_in[k] = in;
        net->stage_out[k] = O;
        split(O, threads, net->column_start[k]);
        ok &= (net->stage_y[k] = aligned(sizeof(float) * O)) != NULL;
        net->whole_last = k == stages - 1 && threads > 1 && sizeof(float) * (size_t)in * O <= WHOLE_LAST_BYTES;
        for (int t = 0; ok && t < threads; t++) {
            const int a = net->whole_last ? 0 : net->column_start[k][t];
            const int n = net->whole_last ? O : net->column_start[k][t + 1] - a;
            for (int j = 0; j < n; j++) col_map[j] = a + j;
            Slice *s = &net->stage[k][t];
            s->cols = n;
            ok &= (s->w = aligned(sizeof(float) * (size_t)in * n)) != NULL;
            ok &= (s->bias = aligned(sizeof(float) * n)) != NULL;
            if (!ok) break;
            gather_columns(s->w, stage_kernel[k], in, O, col_map, n);
            gather_columns(s->bias, stage_bias[k], 1, O, col_map, n);
        }
        in = O;
    }
    ok = ok && in == vocab;
    for (int t = 0; ok && t < threads; t++)
        ok &= (net->logits_of[t] = net->whole_last ? aligned(sizeof(float) * vocab) : net->stage_y[stages - 1]) != NULL;
    for (int t = 0; ok && t < threads; t++) ok &= (net->scratch[t] = aligned(sizeof(float) * widest)) != NULL;
    ok = ok && (net->probs = aligned(sizeof(float) * 2 * (size_t)vocab * threads)) != NULL;
    ok = ok && (net->order = aligned(sizeof(Ranked) * (size_t)vocab * threads)) != NULL;
    free(col_map);
    pthread_mutex_init(&net->lock, NULL);
    pthread_cond_init(&net->wake, NULL);
    atomic_init(&net->arrived, 0);
    atomic_init(&net->sense, 0);
    net->threads = 1; /* until the workers exist */
    for (int t = 1; ok && t < threads; t++) {
        void **arg = malloc(2 * sizeof(void *));
        ok &= arg != NULL;
        if (!ok) break;
        arg[0] = net;
        arg[1] = (void *)(intptr_t)t;
        if (pthread_create(&net->workers[t], NULL, worker, arg) != 0) {
            free(arg);
            ok = 0;
            break;
        }
        net->threads = t + 1;
    }
    if (!ok) {
        lstm_net_free(net);
        return NULL;
    }
    return net;
}

void lstm_net_free(void *handle) {
    Net *net = handle;
    if (!net) return;
    pthread_mutex_lock(&net->lock);
    net->quit = 1;
    pthread_cond_broadcast(&net->wake);
    pthread_mutex_unlock(&net->lock);
    for (int t = 1; t < net->threads; t++) pthread_join(net->workers[t], NULL);
    for (int l = 0; l < MAX_LAYERS; l++) {
        free(net->h[l][0]);
        free(net->h[l][1]);
        free(net->c[l]);
        for (int t = 0; t < MAX_THREADS; t++) {
            free(net->layer[l][t].w);
            free(net->layer[l][t].bias);
        }
    }
    for (int k = 0; k < MAX_STAGES; k++) {
        free(net->stage_y[k]);
        for (int t = 0; t < MAX_THREADS; t++) {
            free(net->stage[k][t].w);
            free(net->stage[k][t].bias);
        }
    }
    for (int t = 0; t < MAX_THREADS; t++) {
        free(net->scratch[t]);
        if (net->whole_last) free(net->logits_of[t]);
    }
    free(net->probs);
    free(net->order);
    pthread_mutex_destroy(&net->lock);
    pthread_cond_destroy(&net->wake);
    free(net);
}

int lstm_net_threads(void *handle) { return ((Net *)handle)->threads; }

/* Changes whenever a function's arguments do: the loader skips a library built from other sources. */
int lstm_net_interface(void) { return 2; }

/* Runs one job: n tokens from the states h[l], c[l] (overwritten with the states after the
   last token) and, when drawing, the logits (overwritten with the logits after it). */
static void job(Net *net, float *const *h, float *const *c, float *logits, int n, const int32_t *given, int32_t *out) {
    for (int l = 0; l < net->layers; l++) {
        memcpy(net->h[l][0], h[l], sizeof(float) * net->units[l]);
        memcpy(net->c[l], c[l], sizeof(float) * net->units[l]);
    }
    for (int t = 0; t < net->threads; t++) memcpy(net->logits_of[t], logits, sizeof(float) * net->vocab);
    net->n_tokens = n;
    net->given = given;
    net->out = out;
    net->parity = 0;
    pthread_mutex_lock(&net->lock);
    net->job++;
    pthread_cond_broadcast(&net->wake);
    pthread_mutex_unlock(&net->lock);
    run(net, 0);
    const int last = n % 2; /* the buffer the last token's states went to */
    for (int l = 0; l < net->layers; l++) {
        memcpy(h[l], net->h[l][last], sizeof(float) * net->units[l]);
        memcpy(c[l], net->c[l], sizeof(float) * net->units[l]);
    }
    memcpy(logits, net->logits_of[0], sizeof(float) * net->vocab);
}

/* Generates n tokens after ``logits`` (the model's output after the prompt) from the states
   ``h[l]`` and ``c[l]``, which are read and then overwritten with the states after the last
   token; ``logits`` is overwritten with the logits after it. Token i is drawn with the uniform
   of (seed, first_step + i). top_k <= 0 and top_p >= 1 turn those filters off. */
void lstm_net_generate(void *handle, float *const *h, float *const *c, float *logits, int n, uint64_t seed,
                       int64_t first_step, float temperature, int top_k, float top_p, int greedy, int32_t *out) {
    Net *net = handle;
    net->seed = seed;
    net->first_step = first_step;
    net->temperature = temperature;
    net->top_k = top_k;
    net->top_p = top_p;
    net->greedy = greedy;
    job(net, h, c, logits, n, NULL, out);
}

/* Runs the n >= 1 ``tokens`` through the model from the states ``h[l]``, ``c[l]`` (overwritten
   with the states after the last) and writes the logits after the last to ``logits``. */
void lstm_net_prime(void *handle, float *const *h, float *const *c, float *logits, const int32_t *tokens, int n) {
    job(handle, h, c, logits, n, tokens, NULL);
}
