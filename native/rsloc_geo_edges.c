/*
 * rsloc_geo_edges.c — stage 2's graph: the grid order and pair-check count, the band index,
 * duplicate suppression, the pair screen, the edge rule with its budgets, and the graph as lists
 * of earlier neighbours. The rules are spelled out in native/README.md.
 */
#include "rsloc_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
/* GCC and Clang on x86-64 also build an AVX2 screen, used when the CPU has AVX2. */
#if defined(__SSE2__) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RSLOC_AVX2 1
#include <immintrin.h>
#else
#define RSLOC_AVX2 0
#endif

#define WGS84_A 6378137.0
#define WGS84_E2 6.69437999014e-3
#define DEG2RAD 0.017453292519943295
#define CELL_MARGIN 1.000001 /* widens the index so rounding never hides a neighbour */
#define GRID_SPLIT 4         /* the pair-check count's cells are reach / GRID_SPLIT wide */
#define STENCIL_ROWS (2 * GRID_SPLIT + 1)
/* The scan's bands are reach / BAND_SPLIT high. On the 200,000-hit benchmark (bench/clique.py,
 * seed 0) 1, 2 and 4 bands per reach screen 3.3, 2.8 and 2.7 x 10^7 pairs in 2, 3 and 5 runs a hit
 * (with CURSOR_GROUP 8); the whole scan took 95.6, 97.5 and 107.3 ms (best of 5 x 5 runs,
 * interleaved, this 2-core machine): fewer, longer runs beat fewer pairs. */
#define BAND_SPLIT 1
#define BAND_ROWS (2 * BAND_SPLIT + 2) /* band offsets a scan may need, with a rounding spare */
/* Metres per degree are tabled by latitude (up to MPD_CACHE / 2 of them): RSLoc tiles share a
 * latitude per tile row, so the benchmark's 200,000 hits have 756 latitudes; the table took the
 * index build from 31.1 to 21.5 ms (best of 5 x 3 runs, interleaved, this 2-core machine). */
#define MPD_CACHE 4096
#define QLON_MAX 4294967040.0 /* quantised longitudes lie in [0, QLON_MAX] */
#define SCREEN_PAD 8          /* the screen reads up to 7 entries past a run (masked off) */
/* Quantised longitudes per reach, and latitudes per suppression radius: coarse enough that the
 * benchmark's band keys (6 + 15 bits) and suppression keys (7 + 15 bits) sort in two radix
 * passes each, fine enough to widen each run by 2 / 256 reach and 2 / 32 radius at most. */
#define QLON_PER_REACH 256.0
#define QLAT_PER_RADIUS 32.0
/* Cursors move once per this many consecutive hits of a band, which then share their runs (the
 * union of theirs; the screen is exact, so extra candidates change nothing). On the benchmark, with
 * BAND_SPLIT 1, groups of 1, 4 and 8 screen 3.09, 3.15 and 3.29 x 10^7 pairs and the scan took
 * 95.6, 96.2 and 93.6 ms (best of 5 x 5 runs, interleaved): fewer mispredicted cursor loops. */
#define CURSOR_GROUP 8
/* Recorded edges are trimmed to the budget B once there are max(3B, TRIM_FLOOR) of them (16 MiB
 * of lists): with B = 100,000 the benchmark's 2.37 M edges are trimmed once, not 12 times. */
#define TRIM_FLOOR ((int64_t)1 << 22)

/* ---- edge keys and the best-k selection ---------------------------------------------------- */

/* An edge's rank key: residual ascending, summed similarity descending, then its ends' positions
 * in the grid order ((cell key, hit index) ascending; README "Grid index") ascending. */
typedef struct {
    float res;
    float ssum;
    int32_t a, b; /* a < b */
} edge_key;

static int edge_key_cmp(const edge_key *e, const edge_key *f)
{
    if (e->res != f->res)
        return e->res < f->res ? -1 : 1;
    if (e->ssum != f->ssum)
        return e->ssum > f->ssum ? -1 : 1;
    if (e->a != f->a)
        return e->a < f->a ? -1 : 1;
    return (e->b > f->b) - (e->b < f->b);
}

/* A key with a payload: where the edge sits (a recorded edge, or a candidate of one node). */
typedef struct {
    edge_key key;
    int64_t at;
} keyed;

static int keyed_cmp(const void *x, const void *y)
{
    return edge_key_cmp(&((const keyed *)x)->key, &((const keyed *)y)->key);
}

static void swap_keyed(keyed *e, int64_t i, int64_t j)
{
    keyed t = e[i];
    e[i] = e[j];
    e[j] = t;
}

/* Reorder e[0..m) so that e[0..k) are its k best (quickselect, median-of-three pivots; a range
 * that does not shrink fast enough is sorted instead, so the worst case is O(m log m)). */
static void select_best(keyed *e, int64_t m, int64_t k)
{
    int64_t lo = 0, hi = m, rounds = 0, limit = 16;
    while ((int64_t)1 << (limit / 2) < m)
        limit += 2;
    while (hi - lo > 16 && rounds++ < limit) {
        int64_t mid = lo + (hi - lo) / 2, i = lo - 1, j = hi;
        keyed pivot;
        if (keyed_cmp(&e[mid], &e[lo]) < 0)
            swap_keyed(e, mid, lo);
        if (keyed_cmp(&e[hi - 1], &e[lo]) < 0)
            swap_keyed(e, hi - 1, lo);
        if (keyed_cmp(&e[hi - 1], &e[mid]) < 0)
            swap_keyed(e, hi - 1, mid);
        pivot = e[mid];
        for (;;) { /* Hoare partition: e[lo..j] <= pivot <= e[j+1..hi) */
            do
                i++;
            while (keyed_cmp(&e[i], &pivot) < 0);
            do
                j--;
            while (keyed_cmp(&e[j], &pivot) > 0);
            if (i >= j)
                break;
            swap_keyed(e, i, j);
        }
        if (k <= j)
            hi = j + 1;
        else
            lo = j + 1;
    }
    if (lo < k && k < hi)
        qsort(e + lo, (size_t)(hi - lo), sizeof *e, keyed_cmp);
}

/* ---- metres per degree ----------------------------------------------------------------------- */

/* WGS84 metres per degree of longitude and of latitude at latitude lat (degrees). */
static void metres_per_degree(double lat, double *mlon, double *mlat)
{
    double phi = lat * DEG2RAD, s = sin(phi), w = 1.0 - WGS84_E2 * s * s;
    *mlon = DEG2RAD * WGS84_A / sqrt(w) * cos(phi);
    *mlat = DEG2RAD * WGS84_A * (1.0 - WGS84_E2) / (w * sqrt(w));
}

typedef struct {
    double lat, mlon, mlat;
} mpd_entry;

/* A table of metres_per_degree by latitude: open addressing over MPD_CACHE slots, filled up to
 * half; latitudes beyond that are computed each time (the same values either way). */
static mpd_entry *mpd_cache_new(void)
{
    mpd_entry *cache = rsloc__alloc_array(MPD_CACHE + 1, sizeof *cache);
    int i;
    if (cache != NULL) {
        for (i = 0; i < MPD_CACHE; i++)
            cache[i].lat = NAN; /* an empty slot: equals no latitude */
        cache[MPD_CACHE].lat = 0; /* slots in use */
    }
    return cache;
}

static void mpd_get(mpd_entry *cache, double lat, double *mlon, double *mlat)
{
    uint64_t bits;
    size_t at;
    memcpy(&bits, &lat, sizeof bits);
    at = (size_t)((bits ^ bits >> 29) * 0x9E3779B97F4A7C15u >> 40) & (MPD_CACHE - 1);
    for (;;) {
        mpd_entry *c = &cache[at];
        if (c->lat == lat) {
            *mlon = c->mlon;
            *mlat = c->mlat;
            return;
        }
        if (c->lat != c->lat) { /* empty */
            metres_per_degree(lat, mlon, mlat);
            if (cache[MPD_CACHE].lat < MPD_CACHE / 2) {
                c->lat = lat;
                c->mlon = *mlon;
                c->mlat = *mlat;
                cache[MPD_CACHE].lat += 1;
            }
            return;
        }
        at = (at + 1) & (MPD_CACHE - 1);
    }
}

/* ---- the grid order and the pair-check count ----------------------------------------------- */

/* Cells of the pair-check count: square, reach / GRID_SPLIT on the ground (in degrees: that over
 * the smallest metres per degree among the hits). Hits dr rows and dc columns apart are more than
 * (|dr|-1)+ and (|dc|-1)+ cells apart on each axis, so an edge needs
 * (|dr|-1)+^2 + (|dc|-1)+^2 < GRID_SPLIT^2: that disc of cells is the stencil counted. */
typedef struct {
    int32_t n_cells;
    int64_t ncols, nrows;
    int64_t *cell_key;   /* n_cells, ascending */
    int32_t *cell_start; /* n_cells + 1 */
    int32_t half_width[GRID_SPLIT + 1];
} cell_grid;

/* Per stencil row, the first and one-past-last cell of the current run; cells are visited in key
 * order and every run bound is a non-decreasing function of the key, so the cursors only move
 * forward. */
typedef struct {
    int32_t lo[STENCIL_ROWS], hi[STENCIL_ROWS];
} stencil_cursor;

/* The hits in the stencil's runs around cell c (one run per stencil row), in all. */
static uint64_t stencil_hits(const cell_grid *cg, int32_t c, stencil_cursor *cur)
{
    int64_t key = cg->cell_key[c], row = key / cg->ncols, col = key % cg->ncols;
    uint64_t total = 0;
    int d;
    for (d = 0; d < STENCIL_ROWS; d++) {
        int64_t r = row + d - GRID_SPLIT, k0, k1;
        int64_t w = cg->half_width[d < GRID_SPLIT ? GRID_SPLIT - d : d - GRID_SPLIT];
        int32_t *a = &cur->lo[d], *b = &cur->hi[d];
        if (r < 0 || r >= cg->nrows || w == 0)
            continue;
        k0 = r * cg->ncols + (col >= w ? col - w : 0);
        k1 = r * cg->ncols + (col + w < cg->ncols ? col + w : cg->ncols - 1);
        while (*a < cg->n_cells && cg->cell_key[*a] < k0)
            (*a)++;
        if (*b < *a)
            *b = *a;
        while (*b < cg->n_cells && cg->cell_key[*b] <= k1)
            (*b)++;
        total += (uint64_t)(cg->cell_start[*b] - cg->cell_start[*a]);
    }
    return total;
}

/* ---- the scan index: bands of latitude, longitude-sorted within each ----------------------- */

/* A hit's data for the exact tests and the picks: one cache line per hit. */
typedef struct {
    double lon, lat, mlon, mlat, x, y; /* x, y: patch centre in ground metres */
    float score;
    int32_t tie, patch, idx; /* tie: position in the grid order; idx: hit index */
} hit_rec;

/* Hits sorted by (band, quantised longitude, hit index), their data in that order. A band is
 * band_m high on the ground; hits D bands apart are more than (|D|-1)+ band_m apart north-south,
 * and hits of bands b, b' within rho metres are within rho / min(band_mlon[b], band_mlon[b'])
 * degrees of longitude of each other. */
typedef struct {
    int32_t n, n_bands;
    int32_t *band_start; /* n_bands + 1 */
    double *band_mlon;   /* least metres per degree of longitude in each band */
    double band_m, qscale, reach;
    double lat0, lat_span, lon_span, mlat_min, mlat_max, mlon_min; /* for suppression */
    uint32_t *qlon; /* floor((lon - lon0) x qscale) */
    hit_rec *rec;   /* in rec_mem, aligned to 64 bytes */
    void *rec_mem;
    int32_t *patch; /* the screen's copy of rec[].patch */
    /* The screen's float copies: lon, lat, x, y about the centre of their range, half metres per
     * degree; t2 = (tolerance + the copies' error bound)^2 (README: "Edges"). */
    float *fu, *fv, *fhu, *fhv, *fx, *fy;
    float t2;
} band_index;

static void band_index_free(band_index *bi)
{
    free(bi->band_start);
    free(bi->band_mlon);
    free(bi->qlon);
    free(bi->rec_mem);
    free(bi->patch);
    free(bi->fu);
    free(bi->fv);
    free(bi->fhu);
    free(bi->fhv);
    free(bi->fx);
    free(bi->fy);
}

/* Quantised-longitude half-width of the pairs within rho metres between bands b and b + d, or -1
 * when none can be. */
static int64_t band_reach(const band_index *bi, int32_t b, int32_t d, double rho)
{
    int32_t ad = d < 0 ? -d : d;
    double ns = (ad > 1 ? ad - 1 : 0) * bi->band_m, w2 = rho * rho - ns * ns, m, q;
    if (w2 < 0)
        return -1;
    m = bi->band_mlon[b] < bi->band_mlon[b + d] ? bi->band_mlon[b] : bi->band_mlon[b + d];
    if (m < 1e-6)
        m = 1e-6; /* at a pole: the whole band */
    q = sqrt(w2) / m * bi->qscale * (1 + 1e-9);
    return q < 4.0 * QLON_MAX ? (int64_t)q + 2 : (int64_t)(4.0 * QLON_MAX);
}

/* Cursors of one band's scan: for each band offset, the run [lo, hi) of hits whose quantised
 * longitude is within reach of the current hit's; hits go by ascending longitude, so the runs
 * only move forward. */
typedef struct {
    int32_t b, d0, d1; /* band and offsets scanned */
    int64_t dq[BAND_ROWS];
    int32_t lo[BAND_ROWS], hi[BAND_ROWS], end[BAND_ROWS];
} band_cursor;

/* Starts the scan of band b for pairs within rho metres over offsets d0..d1. */
static void band_cursor_start(const band_index *bi, band_cursor *bc, int32_t b, int32_t d0,
                              int32_t d1, double rho)
{
    int32_t d;
    bc->b = b;
    bc->d0 = d0;
    bc->d1 = d1;
    for (d = d0; d <= d1; d++) {
        int32_t k = d - d0;
        bc->dq[k] = -1;
        bc->lo[k] = bc->hi[k] = bc->end[k] = 0;
        if (b + d < 0 || b + d >= bi->n_bands)
            continue;
        bc->dq[k] = band_reach(bi, b, d, rho);
        bc->lo[k] = bc->hi[k] = bi->band_start[b + d];
        bc->end[k] = bi->band_start[b + d + 1];
    }
}

/* The runs around hits s0..s1 (in band bc->b, scanned in order): lo[k]..hi[k] per offset, from
 * s0's lower and s1's upper reach. */
static void band_cursor_move(const band_index *bi, band_cursor *bc, int32_t s0, int32_t s1)
{
    int64_t q0 = bi->qlon[s0], q1 = bi->qlon[s1];
    int32_t k, nk = bc->d1 - bc->d0 + 1;
    for (k = 0; k < nk; k++) {
        int64_t dq = bc->dq[k];
        int32_t lo = bc->lo[k], hi = bc->hi[k], end = bc->end[k];
        if (dq < 0)
            continue;
        while (lo < end && (int64_t)bi->qlon[lo] + dq < q0)
            lo++;
        if (hi < lo)
            hi = lo;
        while (hi < end && (int64_t)bi->qlon[hi] <= q1 + dq)
            hi++;
        bc->lo[k] = lo;
        bc->hi[k] = hi;
    }
}

/* The grid order: tie[i] = hit i's position by (cell key, hit index); and the pair checks of the
 * whole scan, stopping early past `limit`. Cell keys are counted in a table when their range is
 * below 4n + 1024, else radix-sorted. key[] is scratch (clobbered). */
static int grid_order(const cell_grid *cg0, int32_t n, uint64_t *key, int32_t *tie,
                      uint64_t limit, uint64_t *checks_out)
{
    cell_grid cg = *cg0;
    uint64_t checks = 0, range = (uint64_t)cg.nrows * (uint64_t)cg.ncols;
    int32_t i, c, *order = NULL, *cum = NULL;
    int rc = RSLOC_ENOMEM;
    if (range < 4 * (uint64_t)n + 1024) { /* counting: cum[k] = hits with a smaller key */
        int64_t k, row;
        cum = rsloc__zalloc_array((size_t)range + 1, sizeof *cum);
        if (cum == NULL)
            goto done;
        for (i = 0; i < n; i++)
            cum[key[i] + 1]++;
        for (k = 0; k < (int64_t)range; k++)
            cum[k + 1] += cum[k];
        for (i = 0; i < n; i++)
            tie[i] = cum[key[i]]++;
        for (k = (int64_t)range; k > 0; k--)
            cum[k] = cum[k - 1];
        cum[0] = 0;
        for (row = 0; row < cg.nrows && checks <= limit; row++) {
            int64_t col;
            for (col = 0; col < cg.ncols; col++) {
                int64_t at = row * cg.ncols + col;
                uint64_t size = (uint64_t)(cum[at + 1] - cum[at]);
                int d;
                if (size == 0)
                    continue;
                for (d = 0; d < STENCIL_ROWS; d++) {
                    int64_t r = row + d - GRID_SPLIT, k0, k1;
                    int64_t w = cg.half_width[d < GRID_SPLIT ? GRID_SPLIT - d : d - GRID_SPLIT];
                    if (r < 0 || r >= cg.nrows)
                        continue;
                    k0 = r * cg.ncols + (col >= w ? col - w : 0);
                    k1 = r * cg.ncols + (col + w < cg.ncols ? col + w : cg.ncols - 1);
                    checks += size * (uint64_t)(cum[k1 + 1] - cum[k0]);
                }
            }
        }
    } else { /* sorting */
        stencil_cursor cur;
        order = rsloc__alloc_array((size_t)n, sizeof *order);
        cg.cell_key = rsloc__alloc_array((size_t)n, sizeof *cg.cell_key);
        cg.cell_start = rsloc__alloc_array((size_t)n + 1, sizeof *cg.cell_start);
        if (order == NULL || cg.cell_key == NULL || cg.cell_start == NULL ||
            rsloc__radix_order(key, n, order) != RSLOC_OK)
            goto done;
        cg.n_cells = 0;
        for (i = 0; i < n; i++) {
            tie[order[i]] = i;
            if (i == 0 || (int64_t)key[i] != cg.cell_key[cg.n_cells - 1]) {
                cg.cell_key[cg.n_cells] = (int64_t)key[i];
                cg.cell_start[cg.n_cells++] = i;
            }
        }
        cg.cell_start[cg.n_cells] = n;
        memset(&cur, 0, sizeof cur);
        for (c = 0; c < cg.n_cells && checks <= limit; c++) {
            uint64_t size = (uint64_t)(cg.cell_start[c + 1] - cg.cell_start[c]);
            checks += size * stencil_hits(&cg, c, &cur);
        }
    }
    *checks_out = checks;
    rc = RSLOC_OK;
done:
    free(order);
    free(cum);
    free(cg.cell_key);
    free(cg.cell_start);
    return rc;
}

/* The grid order (tie ranks), the pair-check count against max_pair_checks, and the scan index
 * of all hits. */
static int index_build(band_index *bi, const rsloc_hits *h, const int32_t *dense,
                       const rsloc_geo_params *p, char *err, size_t err_len)
{
    int32_t n = h->n, i, c;
    double lon0 = h->lon[0], lat0 = h->lat[0], lon1 = lon0, lat1 = lat0;
    double x0, x1, y0, y1, mlon_min, mlon_max, mlat_min, mlat_max, dx, dy, cell_lon, cell_lat;
    double reach, hb, qtop;
    uint64_t *key = NULL, checks = 0, qmask;
    int qbits;
    int32_t *order = NULL, *tie = NULL;
    mpd_entry *cache = NULL;
    cell_grid cg;
    int rc = RSLOC_ENOMEM;

    memset(bi, 0, sizeof *bi);
    memset(&cg, 0, sizeof cg);
    key = rsloc__alloc_array((size_t)n, sizeof *key);
    order = rsloc__alloc_array((size_t)n, sizeof *order);
    tie = rsloc__alloc_array((size_t)n, sizeof *tie);
    cache = mpd_cache_new();
    if (key == NULL || order == NULL || tie == NULL || cache == NULL)
        goto done;

    x0 = x1 = h->px[0] * h->gsd_x;
    y0 = y1 = h->py[0] * h->gsd_y;
    mpd_get(cache, h->lat[0], &mlon_min, &mlat_min);
    mlon_max = mlon_min;
    mlat_max = mlat_min;
    for (i = 0; i < n; i++) {
        double mlon, mlat, x = h->px[i] * h->gsd_x, y = h->py[i] * h->gsd_y;
        mpd_get(cache, h->lat[i], &mlon, &mlat);
        mlon_max = mlon > mlon_max ? mlon : mlon_max;
        mlon_min = mlon < mlon_min ? mlon : mlon_min;
        mlat_min = mlat < mlat_min ? mlat : mlat_min;
        mlat_max = mlat > mlat_max ? mlat : mlat_max;
        lon0 = h->lon[i] < lon0 ? h->lon[i] : lon0;
        lon1 = h->lon[i] > lon1 ? h->lon[i] : lon1;
        lat0 = h->lat[i] < lat0 ? h->lat[i] : lat0;
        lat1 = h->lat[i] > lat1 ? h->lat[i] : lat1;
        x0 = x < x0 ? x : x0;
        x1 = x > x1 ? x : x1;
        y0 = y < y0 ? y : y0;
        y1 = y > y1 ? y : y1;
    }
    /* The longest pixel distance x gsd is the diagonal of the patch centres' bounding box,
     * computed with the same operations as a pair's distance so rounding cannot exceed it. */
    dx = x1 - x0;
    dy = y1 - y0;
    reach = (sqrt(dx * dx + dy * dy) + p->tolerance_m) * CELL_MARGIN;
    if (!(reach >= 1.0))
        reach = 1.0;
    if (mlon_min < 1e-6)
        mlon_min = 1e-6; /* at a pole: one column */

    /* Grid order: cells of the pair-check count, by key, then hit index. */
    cell_lon = reach / GRID_SPLIT / mlon_min;
    cell_lat = reach / GRID_SPLIT / mlat_min;
    for (i = 0; i <= GRID_SPLIT; i++) {
        int32_t a = i > 0 ? i - 1 : 0, b = 0;
        while (a * a + b * b < GRID_SPLIT * GRID_SPLIT)
            b++;
        cg.half_width[i] = b; /* largest (|dc|-1)+ allowed is b - 1 */
    }
    /* Indices stay below 1e8 rows x 2e8 columns because reach >= 1 m. */
    cg.nrows = (int64_t)floor((lat1 - lat0) / cell_lat) + 1;
    cg.ncols = (int64_t)floor((lon1 - lon0) / cell_lon) + 1;
    for (i = 0; i < n; i++) {
        int64_t row = (int64_t)floor((h->lat[i] - lat0) / cell_lat);
        int64_t col = (int64_t)floor((h->lon[i] - lon0) / cell_lon);
        key[i] = (uint64_t)(row * cg.ncols + col);
    }
    /* Before any distance is computed: the pair checks of the whole scan. */
    if (grid_order(&cg, n, key, tie, (uint64_t)p->max_pair_checks, &checks) != RSLOC_OK)
        goto done;
    if (checks > (uint64_t)p->max_pair_checks) {
        rc = rsloc__fail(err, err_len, RSLOC_ELIMIT,
                         "%ld hits need more than max_pair_checks = %lld pair checks "
                         "(too many hits within reach of each other): pass fewer or "
                         "raise the limit",
                         (long)n, (long long)p->max_pair_checks);
        goto done;
    }

    /* Scan bands: reach / BAND_SPLIT high, but at most 2n + 16 of them. */
    bi->band_m = reach / BAND_SPLIT;
    if ((lat1 - lat0) * mlat_min / bi->band_m > 2.0 * n + 15)
        bi->band_m = (lat1 - lat0) * mlat_min / (2.0 * n + 15);
    hb = bi->band_m / mlat_min;
    bi->n_bands = (int32_t)floor((lat1 - lat0) / hb) + 1;
    /* Quantised longitudes: reach / QLON_PER_REACH wide on the ground at most (the cursors
     * widen every run by two of them), at most QLON_MAX of them. */
    bi->qscale = QLON_PER_REACH * mlon_max / reach;
    if ((lon1 - lon0) * bi->qscale > QLON_MAX)
        bi->qscale = QLON_MAX / (lon1 - lon0);
    bi->n = n;
    bi->reach = reach;
    bi->lat0 = lat0;
    bi->lat_span = lat1 - lat0;
    bi->lon_span = lon1 - lon0;
    bi->mlat_min = mlat_min;
    bi->mlon_min = mlon_min;
    bi->mlat_max = mlat_max;
    /* Keys: band, then qbits of quantised longitude (packed: fewer radix passes). */
    qtop = floor((lon1 - lon0) * bi->qscale);
    qtop = qtop < QLON_MAX ? qtop : QLON_MAX;
    for (qbits = 0; qbits < 32 && ldexp(1.0, qbits) <= qtop; qbits++)
        ;
    qmask = ((uint64_t)1 << qbits) - 1;
    for (i = 0; i < n; i++) {
        int64_t band = (int64_t)floor((h->lat[i] - lat0) / hb);
        double q = floor((h->lon[i] - lon0) * bi->qscale);
        band = band < bi->n_bands ? band : bi->n_bands - 1;
        q = q < qtop ? q : qtop;
        key[i] = (uint64_t)band << qbits | (uint64_t)q;
    }
    if (rsloc__radix_order(key, n, order) != RSLOC_OK)
        goto done;
    bi->band_start = rsloc__zalloc_array((size_t)bi->n_bands + 1, sizeof *bi->band_start);
    bi->band_mlon = rsloc__alloc_array((size_t)bi->n_bands, sizeof *bi->band_mlon);
    bi->qlon = rsloc__alloc_array((size_t)n, sizeof *bi->qlon);
    bi->rec_mem = (size_t)n < (SIZE_MAX - 64) / sizeof(hit_rec)
                      ? malloc((size_t)n * sizeof(hit_rec) + 64)
                      : NULL;
    bi->patch = rsloc__zalloc_array((size_t)n + SCREEN_PAD, sizeof *bi->patch);
    bi->fu = rsloc__zalloc_array((size_t)n + SCREEN_PAD, sizeof *bi->fu);
    bi->fv = rsloc__zalloc_array((size_t)n + SCREEN_PAD, sizeof *bi->fv);
    bi->fhu = rsloc__zalloc_array((size_t)n + SCREEN_PAD, sizeof *bi->fhu);
    bi->fhv = rsloc__zalloc_array((size_t)n + SCREEN_PAD, sizeof *bi->fhv);
    bi->fx = rsloc__zalloc_array((size_t)n + SCREEN_PAD, sizeof *bi->fx);
    bi->fy = rsloc__zalloc_array((size_t)n + SCREEN_PAD, sizeof *bi->fy);
    if (bi->band_start == NULL || bi->band_mlon == NULL || bi->qlon == NULL ||
        bi->rec_mem == NULL || bi->patch == NULL || bi->fu == NULL || bi->fv == NULL ||
        bi->fhu == NULL || bi->fhv == NULL || bi->fx == NULL || bi->fy == NULL)
        goto done;
    bi->rec = (hit_rec *)((char *)bi->rec_mem + (64 - (uintptr_t)bi->rec_mem % 64) % 64);
    for (c = 0; c < bi->n_bands; c++)
        bi->band_mlon[c] = HUGE_VAL;
    {
        double lonc = 0.5 * (lon0 + lon1), latc = 0.5 * (lat0 + lat1);
        double xc = 0.5 * (x0 + x1), yc = 0.5 * (y0 + y1), hu = 0, hv = 0, t;
        int32_t *pos = (int32_t *)key; /* key[] is spent once qlon and the counts are out */
        for (i = 0; i < n; i++) {
            int32_t band = (int32_t)(key[i] >> qbits);
            bi->qlon[i] = (uint32_t)(key[i] & qmask);
            bi->band_start[band + 1]++;
        }
        for (i = 0; i < n; i++)
            pos[order[i]] = i;
        /* Hit order in, one record scattered out per hit. */
        for (i = 0; i < n; i++) {
            hit_rec *r = &bi->rec[pos[i]];
            mpd_get(cache, h->lat[i], &r->mlon, &r->mlat);
            r->lon = h->lon[i];
            r->lat = h->lat[i];
            r->x = h->px[i] * h->gsd_x;
            r->y = h->py[i] * h->gsd_y;
            r->score = h->score[i];
            r->tie = tie[i];
            r->patch = dense[i];
            r->idx = i;
        }
        for (c = 0; c < bi->n_bands; c++)
            bi->band_start[c + 1] += bi->band_start[c];
        for (c = 0; c < bi->n_bands; c++)
            for (i = bi->band_start[c]; i < bi->band_start[c + 1]; i++) {
                const hit_rec *r = &bi->rec[i];
                bi->patch[i] = r->patch;
                bi->fu[i] = (float)(r->lon - lonc);
                bi->fv[i] = (float)(r->lat - latc);
                bi->fhu[i] = (float)(0.5 * r->mlon);
                bi->fhv[i] = (float)(0.5 * r->mlat);
                bi->fx[i] = (float)(r->x - xc);
                bi->fy[i] = (float)(r->y - yc);
                hu = r->mlon > hu ? r->mlon : hu;
                hv = r->mlat > hv ? r->mlat : hv;
                bi->band_mlon[c] = r->mlon < bi->band_mlon[c] ? r->mlon : bi->band_mlon[c];
            }
        /* |float distance - double distance| <= 2^-22 (lon range x max m_lon + lat range x
         * max m_lat) + 2^-23 (x range + y range) + 2^-20 x distance, for ground and pixel
         * distances alike (rounding of the copies, 2^-24 each, and of about ten float
         * operations); twice that, for distances up to the reach, widens the tolerance. */
        t = ldexp((lon1 - lon0) * hu + (lat1 - lat0) * hv, -22) +
            ldexp((x1 - x0) + (y1 - y0), -23) + ldexp(reach, -19);
        t = p->tolerance_m * (1 + 1e-6) + 1e-6 + 2.0 * t;
        bi->t2 = (float)(t * t * (1 + 1e-6));
    }
    rc = RSLOC_OK;
done:
    free(key);
    free(order);
    free(tie);
    free(cache);
    if (rc != RSLOC_OK)
        band_index_free(bi);
    return rc;
}

/* ---- duplicate suppression ------------------------------------------------------------------ */

/* Is hit t (scan position) of s's patch outranking s (higher similarity; ties: lower hit index)
 * within radius (squared: r2) on the ground? */
static int outranks(const band_index *bi, int32_t t, int32_t s, double r2)
{
    const hit_rec *a = &bi->rec[t], *b = &bi->rec[s];
    double dx, dy;
    if (a->score < b->score || (a->score == b->score && a->idx > b->idx))
        return 0;
    dx = (a->lon - b->lon) * (b->mlon + a->mlon);
    dy = (a->lat - b->lat) * (b->mlat + a->mlat);
    return 0.25 * (dx * dx + dy * dy) <= r2;
}

/* Duplicate suppression (README: "Nodes"): alive[s] = 0 for every hit outranked by a hit of its
 * own patch within radius on the ground. Hits go by (patch, quantised latitude); a hit's rivals
 * lie within radius / (least metres per degree of latitude) of it in latitude, and within
 * radius / (least metres per degree of longitude) in longitude, which the float copies screen
 * first. Returns how many were dropped, or -1 when out of memory. */
static int32_t suppress(const band_index *bi, double radius, unsigned char *alive)
{
    double r2 = radius * radius, qs, qtop;
    int64_t dq;
    uint64_t qmask;
    int qbits;
    /* float longitudes are off by <= 2^-24 x half the range each; at a pole, any longitude */
    float wlon = bi->mlon_min > 1e-6
                     ? (float)(radius * CELL_MARGIN / bi->mlon_min + ldexp(bi->lon_span, -21))
                     : HUGE_VALF;
    uint64_t *key;
    int32_t *order, n = bi->n, i, g0, dropped = 0;
    float *flon;
    memset(alive, 1, (size_t)n);
    if (radius <= 0)
        return 0;
    /* Quantised latitudes: radius / QLAT_PER_RADIUS on the ground at most. */
    qs = QLAT_PER_RADIUS * bi->mlat_max / radius;
    if (bi->lat_span * qs > QLON_MAX)
        qs = QLON_MAX / bi->lat_span;
    dq = (int64_t)(radius * CELL_MARGIN / bi->mlat_min * qs) + 2;
    qtop = floor(bi->lat_span * qs);
    qtop = qtop < QLON_MAX ? qtop : QLON_MAX;
    for (qbits = 0; qbits < 32 && ldexp(1.0, qbits) <= qtop; qbits++)
        ;
    qmask = ((uint64_t)1 << qbits) - 1; /* keys: patch, then qbits of latitude */
    key = rsloc__alloc_array((size_t)n, sizeof *key);
    order = rsloc__alloc_array((size_t)n, sizeof *order);
    flon = rsloc__alloc_array((size_t)n, sizeof *flon);
    if (key == NULL || order == NULL || flon == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        double q = floor((bi->rec[i].lat - bi->lat0) * qs);
        key[i] = (uint64_t)bi->patch[i] << qbits | (uint64_t)(q < qtop ? q : qtop);
    }
    if (rsloc__radix_order(key, n, order) != RSLOC_OK)
        goto fail;
    for (i = 0; i < n; i++)
        flon[i] = bi->fu[order[i]];
    for (g0 = 0; g0 < n;) {
        int32_t g1 = g0, lo = g0, hi = g0;
        while (g1 < n && key[g1] >> qbits == key[g0] >> qbits)
            g1++;
        for (i = g0; i < g1; i++) {
            int64_t q = (int64_t)(key[i] & qmask);
            int32_t j, s = order[i];
            while ((int64_t)(key[lo] & qmask) + dq < q)
                lo++;
            while (hi < g1 && (int64_t)(key[hi] & qmask) <= q + dq)
                hi++;
            for (j = lo; j < hi; j++)
                if (j != i && fabsf(flon[j] - flon[i]) <= wlon && outranks(bi, order[j], s, r2)) {
                    alive[s] = 0;
                    dropped++;
                    break;
                }
        }
        g0 = g1;
    }
    free(key);
    free(order);
    free(flon);
    return dropped;
fail:
    free(key);
    free(order);
    free(flon);
    return -1;
}

/* Keep only the alive hits in the index (order kept). */
static void index_compact(band_index *bi, const unsigned char *alive)
{
    int32_t b, s, w = 0, start = 0;
    for (b = 0; b < bi->n_bands; b++) {
        int32_t end = bi->band_start[b + 1];
        bi->band_start[b] = w;
        for (s = start; s < end; s++) {
            if (!alive[s])
                continue;
            bi->qlon[w] = bi->qlon[s];
            bi->rec[w] = bi->rec[s];
            bi->patch[w] = bi->patch[s];
            bi->fu[w] = bi->fu[s];
            bi->fv[w] = bi->fv[s];
            bi->fhu[w] = bi->fhu[s];
            bi->fhv[w] = bi->fhv[s];
            bi->fx[w] = bi->fx[s];
            bi->fy[w] = bi->fy[s];
            w++;
        }
        start = end;
    }
    bi->band_start[bi->n_bands] = w;
    bi->n = w;
}

/* ---- the edge rule and its budgets ---------------------------------------------------------- */

/* The screen's survivor extraction without a branch per lane: lanes[m] = the lanes set in the
 * 8-bit mask m, packed to the front; tail[k] = the mask of k lanes (k <= 8). */
typedef struct {
    int32_t lanes[256][8];
    unsigned tail[9];
} screen_tables;

static void screen_tables_fill(screen_tables *tb)
{
    int m, i, k;
    for (m = 0; m < 256; m++) {
        for (i = 0, k = 0; i < 8; i++)
            if (m >> i & 1)
                tb->lanes[m][k++] = i;
        while (k < 8)
            tb->lanes[m][k++] = 0;
    }
    for (k = 0; k <= 8; k++)
        tb->tail[k] = (1u << k) - 1;
}

/* An admitted pair, filed under its later end's band until both ends have picked. */
typedef struct {
    int32_t s, t; /* earlier and later end (scan positions) */
    float res;
    int32_t picked; /* 1: picked by s; 2: picked by t */
} pair_entry;

typedef struct {
    pair_entry *e;
    size_t n, cap;
} pair_buf;

typedef struct {
    const band_index *bi;
    const rsloc_geo_params *p;
    double tol, min_d;
    int32_t dmax, nbuf; /* bands scanned beyond a hit's own; buffers = dmax + 1 */
    int avx2;           /* the CPU runs screen_run_avx2 */
    screen_tables tables;
    pair_buf buf[BAND_ROWS]; /* pairs by their later end's band, modulo nbuf */
    /* the band being finished: per node, where its pairs start in each buffer (one row more for
     * the ends), and its buffer's pairs sorted by later end */
    int32_t *fstart, *bstart, *border;
    size_t border_cap;
    /* per patch: the current node's best candidate */
    pair_entry **slot;
    float *slot_res;
    int32_t *stamp, *touched;
    pair_entry **ranked; /* a node's picks when more than max_edges_per_node */
    keyed *picks;
    int32_t *sel; /* screened positions of one run */
    /* recorded edges: for each node, its earlier neighbours ascending (lower CSR) */
    int64_t *lo_off;
    int32_t *lo_adj;
    size_t adj_cap;
    int64_t m;
} edge_scan;

/* The screen (README: "Screen"): appends to sel every t in [lo, hi) of another patch with
 * |g - p| <= t (g, p the float ground and pixel distances; t^2 = bi->t2) and returns the new
 * count. With A = g^2 + p^2 - t^2, |g - p| <= t <=> A <= 0 or A^2 <= 4 g^2 p^2; the second test
 * allows 2^-18 (g^2 + p^2 + t^2)^2 for float rounding, about 64 times its bound. Lanes run in
 * fours (eights with AVX2) past hi (the arrays are padded, SCREEN_PAD) and are masked off; sel
 * needs hi - lo + 8. */
#define SCREEN_MARGIN (1.0f / 262144.0f)
static int32_t screen_run(const band_index *bi, const screen_tables *tb, int32_t s, int32_t lo,
                          int32_t hi, int32_t *sel, int32_t ns)
{
    const float u = bi->fu[s], v = bi->fv[s], hu = bi->fhu[s], hv = bi->fhv[s];
    const float x = bi->fx[s], y = bi->fy[s], t2 = bi->t2;
    const int32_t ps = bi->patch[s];
    const float *fu = bi->fu, *fv = bi->fv, *fhu = bi->fhu, *fhv = bi->fhv;
    const float *fx = bi->fx, *fy = bi->fy;
    const int32_t *patch = bi->patch;
    int32_t t = lo;
#if defined(__SSE2__)
    const __m128 vu = _mm_set1_ps(u), vv = _mm_set1_ps(v), vhu = _mm_set1_ps(hu);
    const __m128 vhv = _mm_set1_ps(hv), vx = _mm_set1_ps(x), vy = _mm_set1_ps(y);
    const __m128 vt2 = _mm_set1_ps(t2), vm = _mm_set1_ps(SCREEN_MARGIN);
    const __m128 four = _mm_set1_ps(4.0f), zero = _mm_setzero_ps();
    const __m128i vps = _mm_set1_epi32(ps);
    for (; t < hi; t += 4) {
        __m128 du = _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(fu + t), vu),
                               _mm_add_ps(_mm_loadu_ps(fhu + t), vhu));
        __m128 dv = _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(fv + t), vv),
                               _mm_add_ps(_mm_loadu_ps(fhv + t), vhv));
        __m128 ex = _mm_sub_ps(_mm_loadu_ps(fx + t), vx);
        __m128 ey = _mm_sub_ps(_mm_loadu_ps(fy + t), vy);
        __m128 g2 = _mm_add_ps(_mm_mul_ps(du, du), _mm_mul_ps(dv, dv));
        __m128 p2 = _mm_add_ps(_mm_mul_ps(ex, ex), _mm_mul_ps(ey, ey));
        __m128 gp = _mm_add_ps(g2, p2);
        __m128 a = _mm_sub_ps(gp, vt2), sum = _mm_add_ps(gp, vt2);
        __m128 q = _mm_sub_ps(_mm_mul_ps(a, a), _mm_mul_ps(_mm_mul_ps(g2, p2), four));
        __m128 ok = _mm_or_ps(_mm_cmple_ps(a, zero),
                              _mm_cmple_ps(q, _mm_mul_ps(_mm_mul_ps(sum, sum), vm)));
        __m128i same = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(patch + t)), vps);
        unsigned m = (unsigned)_mm_movemask_ps(_mm_andnot_ps(_mm_castsi128_ps(same), ok));
        int32_t left = hi - t;
        m &= tb->tail[left < 4 ? left : 4];
        _mm_storeu_si128((__m128i *)(sel + ns),
                         _mm_add_epi32(_mm_set1_epi32(t),
                                       _mm_loadu_si128((const __m128i *)tb->lanes[m])));
        ns += popcount64(m);
    }
#else
    (void)tb;
    for (; t < hi; t++) {
        float du = (fu[t] - u) * (fhu[t] + hu), dv = (fv[t] - v) * (fhv[t] + hv);
        float ex = fx[t] - x, ey = fy[t] - y;
        float g2 = du * du + dv * dv, p2 = ex * ex + ey * ey, gp = g2 + p2;
        float a = gp - t2, sum = gp + t2, q = a * a - g2 * p2 * 4.0f;
        if ((a <= 0 || q <= sum * sum * SCREEN_MARGIN) && patch[t] != ps)
            sel[ns++] = t;
    }
#endif
    return ns;
}

#if RSLOC_AVX2


/* screen_run in eights, for CPUs with AVX2 (chosen at run time): the same arithmetic per lane. */
__attribute__((target("avx2"))) static int32_t screen_run_avx2(const band_index *bi,
                                                               const screen_tables *tb, int32_t s,
                                                               int32_t lo, int32_t hi,
                                                               int32_t *sel, int32_t ns)
{
    const __m256 vu = _mm256_set1_ps(bi->fu[s]), vv = _mm256_set1_ps(bi->fv[s]);
    const __m256 vhu = _mm256_set1_ps(bi->fhu[s]), vhv = _mm256_set1_ps(bi->fhv[s]);
    const __m256 vx = _mm256_set1_ps(bi->fx[s]), vy = _mm256_set1_ps(bi->fy[s]);
    const __m256 vt2 = _mm256_set1_ps(bi->t2), vm = _mm256_set1_ps(SCREEN_MARGIN);
    const __m256 four = _mm256_set1_ps(4.0f), zero = _mm256_setzero_ps();
    const __m256i vps = _mm256_set1_epi32(bi->patch[s]);
    const float *fu = bi->fu, *fv = bi->fv, *fhu = bi->fhu, *fhv = bi->fhv;
    const float *fx = bi->fx, *fy = bi->fy;
    const int32_t *patch = bi->patch;
    int32_t t;
    for (t = lo; t < hi; t += 8) {
        __m256 du = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(fu + t), vu),
                                  _mm256_add_ps(_mm256_loadu_ps(fhu + t), vhu));
        __m256 dv = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(fv + t), vv),
                                  _mm256_add_ps(_mm256_loadu_ps(fhv + t), vhv));
        __m256 ex = _mm256_sub_ps(_mm256_loadu_ps(fx + t), vx);
        __m256 ey = _mm256_sub_ps(_mm256_loadu_ps(fy + t), vy);
        __m256 g2 = _mm256_add_ps(_mm256_mul_ps(du, du), _mm256_mul_ps(dv, dv));
        __m256 p2 = _mm256_add_ps(_mm256_mul_ps(ex, ex), _mm256_mul_ps(ey, ey));
        __m256 gp = _mm256_add_ps(g2, p2);
        __m256 a = _mm256_sub_ps(gp, vt2), sum = _mm256_add_ps(gp, vt2);
        __m256 q = _mm256_sub_ps(_mm256_mul_ps(a, a), _mm256_mul_ps(_mm256_mul_ps(g2, p2), four));
        __m256 ok = _mm256_or_ps(_mm256_cmp_ps(a, zero, _CMP_LE_OQ),
                                 _mm256_cmp_ps(q, _mm256_mul_ps(_mm256_mul_ps(sum, sum), vm),
                                               _CMP_LE_OQ));
        __m256i same = _mm256_cmpeq_epi32(_mm256_loadu_si256((const __m256i *)(patch + t)), vps);
        unsigned m = (unsigned)_mm256_movemask_ps(_mm256_andnot_ps(_mm256_castsi256_ps(same), ok));
        int32_t left = hi - t;
        m &= tb->tail[left < 8 ? left : 8];
        _mm256_storeu_si256((__m256i *)(sel + ns),
                            _mm256_add_epi32(_mm256_set1_epi32(t),
                                             _mm256_loadu_si256((const __m256i *)tb->lanes[m])));
        ns += popcount64(m);
    }
    return ns;
}
#endif


/* Admitted pairs (s, t) for t later than s in the scan (same band after s, and the next band):
 * screened, then tested exactly, then filed under t's band. 0 or RSLOC_ENOMEM. */
static int forward_pairs(edge_scan *es, const band_cursor *bc, int32_t s)
{
    const band_index *bi = es->bi;
    const hit_rec *rs = &bi->rec[s];
    const double lon = rs->lon, lat = rs->lat, mlon = rs->mlon, mlat = rs->mlat;
    const double x = rs->x, y = rs->y;
    int32_t k, i;
    for (k = 0; k <= es->dmax; k++) {
        int32_t lo = k == 0 ? s + 1 : bc->lo[k], hi = bc->hi[k], ns;
        pair_buf *pb = &es->buf[(bc->b + k) % es->nbuf];
        if (hi <= lo)
            continue;
#if RSLOC_AVX2
        ns = es->avx2 ? screen_run_avx2(bi, &es->tables, s, lo, hi, es->sel, 0)
                      : screen_run(bi, &es->tables, s, lo, hi, es->sel, 0);
#else
        ns = screen_run(bi, &es->tables, s, lo, hi, es->sel, 0);
#endif
        if (pb->n + (size_t)ns > pb->cap &&
            rsloc__reserve((void **)&pb->e, &pb->cap, pb->n + (size_t)ns, sizeof *pb->e))
            return RSLOC_ENOMEM;
        for (i = 0; i < ns; i++) {
            int32_t t = es->sel[i];
            /* Exact test, the same arithmetic from either end (and in trim_edges). */
            const hit_rec *rt = &bi->rec[t];
            double dx = (rt->lon - lon) * (mlon + rt->mlon);
            double dy = (rt->lat - lat) * (mlat + rt->mlat);
            double dg = 0.5 * sqrt(dx * dx + dy * dy);
            double ex = rt->x - x, ey = rt->y - y;
            double res = fabs(dg - sqrt(ex * ex + ey * ey));
            pair_entry *e = &pb->e[pb->n];
            e->s = s;
            e->t = t;
            e->res = (float)res;
            e->picked = 0;
            pb->n += res <= es->tol && dg > es->min_d;
        }
    }
    return RSLOC_OK;
}

/* The key of node u's candidate pair e. */
static void candidate_key(const band_index *bi, int32_t u, const pair_entry *e, edge_key *k)
{
    const hit_rec *ru = &bi->rec[u], *rt = &bi->rec[e->s == u ? e->t : e->s];
    k->res = e->res;
    k->ssum = ru->score + rt->score;
    k->a = ru->tie < rt->tie ? ru->tie : rt->tie;
    k->b = ru->tie < rt->tie ? rt->tie : ru->tie;
}

/* Is e a better candidate than o for node u, their residuals being equal? */
static int better_tied(const band_index *bi, int32_t u, const pair_entry *e, const pair_entry *o)
{
    edge_key ke, ko;
    candidate_key(bi, u, e, &ke);
    candidate_key(bi, u, o, &ko);
    return edge_key_cmp(&ke, &ko) < 0;
}

/* Node u's picks e[0..n) best first: by residual, full keys only for equal residuals (an
 * insertion sort: a node has few picks). */
static void rank_picks(const band_index *bi, int32_t u, pair_entry **e, int32_t n)
{
    int32_t i, j;
    for (i = 1; i < n; i++) {
        pair_entry *x = e[i];
        for (j = i; j > 0 && (x->res < e[j - 1]->res ||
                              (x->res == e[j - 1]->res && better_tied(bi, u, x, e[j - 1])));
             j--)
            e[j] = e[j - 1];
        e[j] = x;
    }
}

/* Node u's best candidate into patch q so far, with e arriving; the best one so far carries
 * u's pick (bit: 1 when u is e's earlier end, 2 when its later end). A second candidate into a
 * patch is settled without branches on the residuals (their order is a coin toss). */
static inline void consider(edge_scan *es, int32_t u, int32_t q, pair_entry *e, int32_t bit,
                            int32_t *nt)
{
    if (es->stamp[q] != u + 1) {
        es->stamp[q] = u + 1;
        es->slot[q] = e;
        es->slot_res[q] = e->res;
        es->touched[(*nt)++] = q;
        e->picked |= bit;
    } else {
        pair_entry *o = es->slot[q], *w, *l;
        float ores = es->slot_res[q];
        int32_t obit = o->s == u ? 1 : 2, better = e->res < ores;
        if (e->res == ores)
            better = better_tied(es->bi, u, e, o);
        w = better ? e : o;
        l = better ? o : e;
        l->picked &= ~(better ? obit : bit);
        w->picked |= better ? bit : obit;
        es->slot[q] = w;
        es->slot_res[q] = better ? e->res : ores;
    }
}

/* Keep the best `keep` recorded edges (nodes 0..upto), dropping the others from the lower CSR. */
static int trim_edges(edge_scan *es, int32_t upto, int64_t keep)
{
    const band_index *bi = es->bi;
    keyed *all = rsloc__alloc_array((size_t)es->m, sizeof *all);
    unsigned char *kept = rsloc__zalloc_array((size_t)es->m, sizeof *kept);
    int32_t u;
    int64_t e, w = 0;
    if (all == NULL || kept == NULL) {
        free(all);
        free(kept);
        return RSLOC_ENOMEM;
    }
    for (u = 0; u <= upto; u++)
        for (e = es->lo_off[u]; e < es->lo_off[u + 1]; e++) {
            int32_t t = es->lo_adj[e]; /* t < u: forward_pairs' arithmetic with s = t */
            const hit_rec *ru = &bi->rec[u], *rt = &bi->rec[t];
            double dx = (ru->lon - rt->lon) * (rt->mlon + ru->mlon);
            double dy = (ru->lat - rt->lat) * (rt->mlat + ru->mlat);
            double dg = 0.5 * sqrt(dx * dx + dy * dy);
            double ex = ru->x - rt->x, ey = ru->y - rt->y;
            all[e].key.res = (float)fabs(dg - sqrt(ex * ex + ey * ey));
            all[e].key.ssum = ru->score + rt->score;
            all[e].key.a = ru->tie < rt->tie ? ru->tie : rt->tie;
            all[e].key.b = ru->tie < rt->tie ? rt->tie : ru->tie;
            all[e].at = e;
        }
    select_best(all, es->m, keep);
    for (e = 0; e < keep; e++)
        kept[all[e].at] = 1;
    for (u = 0; u <= upto; u++) {
        int64_t lo = es->lo_off[u], hi = es->lo_off[u + 1];
        es->lo_off[u] = w;
        for (e = lo; e < hi; e++)
            if (kept[e])
                es->lo_adj[w++] = es->lo_adj[e];
    }
    es->lo_off[upto + 1] = w;
    es->m = w;
    free(all);
    free(kept);
    return RSLOC_OK;
}

/* Band b, whose pairs are all filed: every node picks (its best candidate per other patch, the
 * best max_edges_per_node of those); then the pairs filed under b (later end in b) are final and
 * recorded, picked by either end, as the later ends' lists of earlier neighbours. */
static int finish_band(edge_scan *es, int32_t b)
{
    const band_index *bi = es->bi;
    int32_t bs = bi->band_start[b], w = bi->band_start[b + 1] - bs, u, k, q, kmax;
    int32_t nb = es->nbuf;
    pair_buf *own = &es->buf[b % nb];
    size_t i, n = own->n;
    int64_t base = es->m;
    kmax = es->p->max_edges_per_node;
    /* Pairs filed under b by later end (stable: earlier ends ascending). */
    if (rsloc__reserve((void **)&es->border, &es->border_cap, n, sizeof *es->border))
        return RSLOC_ENOMEM;
    memset(es->bstart, 0, ((size_t)w + 1) * sizeof *es->bstart);
    for (i = 0; i < n; i++)
        es->bstart[own->e[i].t - bs + 1]++;
    for (u = 0; u < w; u++)
        es->bstart[u + 1] += es->bstart[u];
    for (i = 0; i < n; i++)
        es->border[es->bstart[own->e[i].t - bs]++] = (int32_t)i;
    for (u = w; u > 0; u--)
        es->bstart[u] = es->bstart[u - 1];
    es->bstart[0] = 0;

    if (rsloc__reserve((void **)&es->lo_adj, &es->adj_cap, (size_t)base + n, sizeof *es->lo_adj))
        return RSLOC_ENOMEM;
    for (u = 0; u < w; u++) {
        int32_t node = bs + u, nt = 0, j, j0 = es->bstart[u], j1 = es->bstart[u + 1];
        for (j = j0; j < j1; j++) {
            pair_entry *e = &own->e[es->border[j]];
            consider(es, node, bi->patch[e->s], e, 2, &nt);
        }
        for (k = 0; k <= es->dmax; k++) {
            pair_buf *pb = &es->buf[(b + k) % nb];
            int32_t f0 = es->fstart[(size_t)u * nb + k], f1 = es->fstart[(size_t)(u + 1) * nb + k];
            for (j = f0; j < f1; j++)
                consider(es, node, bi->patch[pb->e[j].t], &pb->e[j], 1, &nt);
        }
        if (nt > kmax) { /* only the best kmax picks stay */
            for (q = 0; q < nt; q++)
                es->ranked[q] = es->slot[es->touched[q]];
            if (nt <= 64) {
                rank_picks(bi, node, es->ranked, nt);
                for (q = kmax; q < nt; q++)
                    es->ranked[q]->picked &= ~(es->ranked[q]->s == node ? 1 : 2);
            } else { /* many: sorted by full keys */
                for (q = 0; q < nt; q++) {
                    candidate_key(bi, node, es->ranked[q], &es->picks[q].key);
                    es->picks[q].at = q;
                }
                qsort(es->picks, (size_t)nt, sizeof *es->picks, keyed_cmp);
                for (q = kmax; q < nt; q++) {
                    pair_entry *e = es->ranked[es->picks[q].at];
                    e->picked &= ~(e->s == node ? 1 : 2);
                }
            }
        }
        /* Recorded: the node's earlier neighbours picked by either end (both have picked now),
         * ascending. */
        for (j = j0; j < j1; j++) {
            const pair_entry *e = &own->e[es->border[j]];
            es->lo_adj[base] = e->s;
            base += e->picked != 0;
        }
        es->lo_off[node + 1] = base;
    }
    es->m = base;
    own->n = 0;
    /* Each edge is recorded once, so trimming to the best B whenever max(3B, TRIM_FLOOR) are
     * recorded never changes the outcome and bounds the memory. */
    if (w > 0 && (uint64_t)es->m / 3 >= (uint64_t)es->p->max_edges_total &&
        es->m >= TRIM_FLOOR)
        return trim_edges(es, bs + w - 1, es->p->max_edges_total);
    return RSLOC_OK;
}

static void edge_scan_free(edge_scan *es)
{
    int k;
    for (k = 0; k < BAND_ROWS; k++)
        free(es->buf[k].e);
    free(es->fstart);
    free(es->bstart);
    free(es->border);
    free(es->slot);
    free(es->slot_res);
    free(es->stamp);
    free(es->touched);
    free(es->ranked);
    free(es->picks);
    free(es->sel);
    free(es->lo_off);
    free(es->lo_adj);
}

/* Every hit picks, for each other patch, its best edge into that patch and keeps its
 * max_edges_per_node best picks; an edge exists when either end picked it; the max_edges_total
 * best edges survive. Each pair is examined once, from its earlier end in the scan, and filed
 * under its later end's band; a band's nodes pick once the bands up to dmax before it are
 * scanned, so only dmax + 1 bands' pairs are held at a time. */
static int scan_edges(const band_index *bi, int32_t n_patches, const rsloc_geo_params *p,
                      rsloc__geo_graph *g)
{
    edge_scan es;
    band_cursor bc;
    int32_t b, s, k, widest = 1;
    int rc = RSLOC_ENOMEM;

    memset(&es, 0, sizeof es);
    es.bi = bi;
    es.p = p;
    es.tol = p->tolerance_m;
    es.min_d = p->min_distance_m;
    /* The reach bounds every edge; bands up to ceil(reach / band_m) apart can hold one. */
    es.dmax = (int32_t)ceil(bi->reach / bi->band_m);
    es.dmax = es.dmax < BAND_ROWS - 1 ? es.dmax : BAND_ROWS - 1;
    es.nbuf = es.dmax + 1;
    screen_tables_fill(&es.tables);
#if RSLOC_AVX2
    es.avx2 = __builtin_cpu_supports("avx2");
#endif
    for (b = 0; b < bi->n_bands; b++)
        if (bi->band_start[b + 1] - bi->band_start[b] > widest)
            widest = bi->band_start[b + 1] - bi->band_start[b];
    es.fstart = rsloc__alloc_array(((size_t)widest + 1) * (size_t)es.nbuf, sizeof *es.fstart);
    es.bstart = rsloc__alloc_array((size_t)widest + 1, sizeof *es.bstart);
    es.slot = rsloc__alloc_array((size_t)n_patches, sizeof *es.slot);
    es.slot_res = rsloc__alloc_array((size_t)n_patches, sizeof *es.slot_res);
    es.stamp = rsloc__zalloc_array((size_t)n_patches, sizeof *es.stamp);
    es.touched = rsloc__alloc_array((size_t)n_patches, sizeof *es.touched);
    es.ranked = rsloc__alloc_array((size_t)n_patches, sizeof *es.ranked);
    es.picks = rsloc__alloc_array((size_t)n_patches, sizeof *es.picks);
    es.sel = rsloc__alloc_array((size_t)widest + SCREEN_PAD, sizeof *es.sel);
    es.lo_off = rsloc__alloc_array((size_t)bi->n + 1, sizeof *es.lo_off);
    if (es.fstart == NULL || es.bstart == NULL || es.slot == NULL || es.slot_res == NULL ||
        es.stamp == NULL ||
        es.touched == NULL || es.ranked == NULL || es.picks == NULL || es.sel == NULL || es.lo_off == NULL)
        goto done;
    es.lo_off[0] = 0;
    for (b = 0; b < bi->n_bands; b++) {
        int32_t bs = bi->band_start[b], be = bi->band_start[b + 1];
        if (bs < be) {
            band_cursor_start(bi, &bc, b, 0, es.dmax, bi->reach);
            for (s = bs; s < be; s++) {
                int32_t *fs = es.fstart + (size_t)(s - bs) * es.nbuf;
                for (k = 0; k < es.nbuf; k++)
                    fs[k] = (int32_t)es.buf[(b + k) % es.nbuf].n;
                if ((s - bs) % CURSOR_GROUP == 0) {
                    int32_t last = be - s > CURSOR_GROUP ? s + CURSOR_GROUP - 1 : be - 1;
                    band_cursor_move(bi, &bc, s, last);
                }
                if (forward_pairs(&es, &bc, s) != RSLOC_OK)
                    goto done;
            }
            for (k = 0; k < es.nbuf; k++)
                es.fstart[(size_t)(be - bs) * es.nbuf + k] = (int32_t)es.buf[(b + k) % es.nbuf].n;
        }
        if (finish_band(&es, b) != RSLOC_OK)
            goto done;
    }
    if (es.m > p->max_edges_total && trim_edges(&es, bi->n - 1, p->max_edges_total) != RSLOC_OK)
        goto done;
    g->off = es.lo_off;
    g->adj = es.lo_adj;
    es.lo_off = NULL;
    es.lo_adj = NULL;
    g->n_edges = es.m;
    rc = RSLOC_OK;
done:
    edge_scan_free(&es);
    return rc;
}

void rsloc__geo_graph_free(rsloc__geo_graph *g)
{
    free(g->off);
    free(g->adj);
    free(g->node_hit);
    memset(g, 0, sizeof *g);
}

int rsloc__geo_graph_build(const rsloc_hits *h, const int32_t *dense, int32_t n_patches,
                           const rsloc_geo_params *p, rsloc__geo_graph *g, char *err,
                           size_t err_len)
{
    band_index bi;
    unsigned char *alive;
    int rc;

    memset(g, 0, sizeof *g);
    rc = index_build(&bi, h, dense, p, err, err_len);
    if (rc != RSLOC_OK)
        return rc;
    rc = RSLOC_ENOMEM;
    alive = rsloc__alloc_array((size_t)bi.n, sizeof *alive);
    if (alive == NULL)
        goto done;
    g->n_suppressed = suppress(&bi, p->suppress_ratio * p->tolerance_m, alive);
    if (g->n_suppressed < 0) {
        free(alive);
        goto done;
    }
    index_compact(&bi, alive);
    free(alive);
    if (scan_edges(&bi, n_patches, p, g) != RSLOC_OK)
        goto done;
    g->n = bi.n;
    g->node_hit = rsloc__alloc_array((size_t)bi.n, sizeof *g->node_hit);
    if (g->node_hit == NULL)
        goto done;
    {
        int32_t v;
        for (v = 0; v < bi.n; v++)
            g->node_hit[v] = bi.rec[v].idx;
    }
    rc = RSLOC_OK;
done:
    band_index_free(&bi);
    if (rc != RSLOC_OK)
        rsloc__geo_graph_free(g);
    return rc;
}
