/*
 * rsloc_geo_edges.c — stage 2's grid index, duplicate suppression and edge building with its
 * budgets. The rules are spelled out in native/README.md.
 */
#include "rsloc_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WGS84_A 6378137.0
#define WGS84_E2 6.69437999014e-3
#define DEG2RAD 0.017453292519943295
#define CELL_MARGIN 1.000001 /* widens grid cells so rounding never hides a neighbour */
#define STENCIL_ROWS (2 * GRID_SPLIT + 1)

static int edge_key_cmp(const void *x, const void *y)
{
    const edge_key *e = x, *f = y;
    if (e->res != f->res)
        return e->res < f->res ? -1 : 1;
    if (e->ssum != f->ssum)
        return e->ssum > f->ssum ? -1 : 1;
    if (e->a != f->a)
        return e->a < f->a ? -1 : 1;
    return (e->b > f->b) - (e->b < f->b);
}

typedef struct {
    int64_t key;
    int32_t idx;
} cell_item;

static int cell_item_cmp(const void *x, const void *y)
{
    const cell_item *a = x, *b = y;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

void rsloc__grid_free(grid *gr)
{
    free(gr->idx);
    free(gr->patch);
    free(gr->lon);
    free(gr->lat);
    free(gr->mlon);
    free(gr->mlat);
    free(gr->x);
    free(gr->y);
    free(gr->score);
    free(gr->cell_key);
    free(gr->cell_start);
}

/* WGS84 metres per degree of longitude and of latitude at latitude lat (degrees). */
static void metres_per_degree(double lat, double *mlon, double *mlat)
{
    double phi = lat * DEG2RAD, s = sin(phi), w = 1.0 - WGS84_E2 * s * s;
    *mlon = DEG2RAD * WGS84_A / sqrt(w) * cos(phi);
    *mlat = DEG2RAD * WGS84_A * (1.0 - WGS84_E2) / (w * sqrt(w));
}

/* Square cells of side reach / GRID_SPLIT on the ground (in degrees: that over the smallest metres
 * per degree among the hits). Hits dr rows and dc columns apart are more than
 * (|dr|-1)+ and (|dc|-1)+ cells apart on each axis, so an edge needs
 * (|dr|-1)+^2 + (|dc|-1)+^2 < GRID_SPLIT^2: that disc of cells is the stencil scanned. */
int rsloc__grid_build(grid *gr, const rsloc_hits *h, const int32_t *dense, double tolerance_m)
{
    int32_t n = h->n, i;
    double lon0 = h->lon[0], lat0 = h->lat[0], lon1 = lon0, lat1 = lat0;
    double x0, x1, y0, y1, mlon_min, mlat_min, dx, dy, cell_lon, cell_lat;
    cell_item *items = NULL;

    memset(gr, 0, sizeof *gr);
    gr->n = n;
    gr->idx = rsloc__alloc_array((size_t)n, sizeof *gr->idx);
    gr->patch = rsloc__alloc_array((size_t)n, sizeof *gr->patch);
    gr->lon = rsloc__alloc_array((size_t)n, sizeof *gr->lon);
    gr->lat = rsloc__alloc_array((size_t)n, sizeof *gr->lat);
    gr->mlon = rsloc__alloc_array((size_t)n, sizeof *gr->mlon);
    gr->mlat = rsloc__alloc_array((size_t)n, sizeof *gr->mlat);
    gr->x = rsloc__alloc_array((size_t)n, sizeof *gr->x);
    gr->y = rsloc__alloc_array((size_t)n, sizeof *gr->y);
    gr->score = rsloc__alloc_array((size_t)n, sizeof *gr->score);
    gr->cell_key = rsloc__alloc_array((size_t)n, sizeof *gr->cell_key);
    gr->cell_start = rsloc__alloc_array((size_t)n + 1, sizeof *gr->cell_start);
    items = rsloc__alloc_array((size_t)n, sizeof *items);
    if (gr->idx == NULL || gr->patch == NULL || gr->lon == NULL || gr->lat == NULL ||
        gr->mlon == NULL || gr->mlat == NULL || gr->x == NULL || gr->y == NULL ||
        gr->score == NULL || gr->cell_key == NULL || gr->cell_start == NULL || items == NULL) {
        free(items);
        return RSLOC_ENOMEM;
    }

    x0 = x1 = h->px[0] * h->gsd_x;
    y0 = y1 = h->py[0] * h->gsd_y;
    metres_per_degree(h->lat[0], &mlon_min, &mlat_min);
    for (i = 0; i < n; i++) {
        double mlon, mlat, x = h->px[i] * h->gsd_x, y = h->py[i] * h->gsd_y;
        metres_per_degree(h->lat[i], &mlon, &mlat);
        mlon_min = mlon < mlon_min ? mlon : mlon_min;
        mlat_min = mlat < mlat_min ? mlat : mlat_min;
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
    gr->reach = (sqrt(dx * dx + dy * dy) + tolerance_m) * CELL_MARGIN;
    if (!(gr->reach >= 1.0))
        gr->reach = 1.0;
    if (mlon_min < 1e-6)
        mlon_min = 1e-6; /* at a pole: one column */
    cell_lon = gr->reach / GRID_SPLIT / mlon_min;
    cell_lat = gr->reach / GRID_SPLIT / mlat_min;
    for (i = 0; i <= GRID_SPLIT; i++) {
        int32_t a = i > 0 ? i - 1 : 0, b = 0;
        while (a * a + b * b < GRID_SPLIT * GRID_SPLIT)
            b++;
        gr->half_width[i] = b; /* largest (|dc|-1)+ allowed is b - 1 */
    }
    /* Indices stay below 1e8 rows x 2e8 columns because reach >= 1 m. */
    gr->nrows = (int64_t)floor((lat1 - lat0) / cell_lat) + 1;
    gr->ncols = (int64_t)floor((lon1 - lon0) / cell_lon) + 1;
    for (i = 0; i < n; i++) {
        int64_t row = (int64_t)floor((h->lat[i] - lat0) / cell_lat);
        int64_t col = (int64_t)floor((h->lon[i] - lon0) / cell_lon);
        items[i].key = row * gr->ncols + col;
        items[i].idx = i;
    }
    qsort(items, (size_t)n, sizeof *items, cell_item_cmp);
    gr->n_cells = 0;
    for (i = 0; i < n; i++) {
        int32_t j = items[i].idx;
        gr->idx[i] = j;
        gr->patch[i] = dense[j];
        gr->lon[i] = h->lon[j];
        gr->lat[i] = h->lat[j];
        metres_per_degree(h->lat[j], &gr->mlon[i], &gr->mlat[i]);
        gr->x[i] = h->px[j] * h->gsd_x;
        gr->y[i] = h->py[j] * h->gsd_y;
        gr->score[i] = h->score[j];
        if (i == 0 || items[i].key != gr->cell_key[gr->n_cells - 1]) {
            gr->cell_key[gr->n_cells] = items[i].key;
            gr->cell_start[gr->n_cells++] = i;
        }
    }
    gr->cell_start[gr->n_cells] = n;
    free(items);
    return RSLOC_OK;
}

/* Per stencil row, the first and one-past-last cell of the current run. Cells are visited in
 * key order and every run bound is a non-decreasing function of the cell key, so the cursors
 * only move forward: O(cells x rows) for a whole scan. */
typedef struct {
    int32_t lo[STENCIL_ROWS], hi[STENCIL_ROWS];
} stencil_cursor;

/* The hits of the stencil around cell c, as runs [lo, hi) of sorted positions (cells of one row
 * are consecutive keys, hence one run per row). Returns the run count. */
static int neighbour_runs(const grid *gr, int32_t c, stencil_cursor *cur, int32_t *lo,
                          int32_t *hi)
{
    int64_t key = gr->cell_key[c], row = key / gr->ncols, col = key % gr->ncols;
    int d, runs = 0;
    for (d = 0; d < STENCIL_ROWS; d++) {
        int64_t r = row + d - GRID_SPLIT, k0, k1;
        int64_t w = gr->half_width[d < GRID_SPLIT ? GRID_SPLIT - d : d - GRID_SPLIT];
        int32_t *a = &cur->lo[d], *b = &cur->hi[d];
        if (r < 0 || r >= gr->nrows || w == 0)
            continue;
        k0 = r * gr->ncols + (col >= w ? col - w : 0);
        k1 = r * gr->ncols + (col + w < gr->ncols ? col + w : gr->ncols - 1);
        while (*a < gr->n_cells && gr->cell_key[*a] < k0)
            (*a)++;
        if (*b < *a)
            *b = *a;
        while (*b < gr->n_cells && gr->cell_key[*b] <= k1)
            (*b)++;
        if (*a < *b) {
            lo[runs] = gr->cell_start[*a];
            hi[runs] = gr->cell_start[*b];
            runs++;
        }
    }
    return runs;
}

static void swap_edges(edge_key *e, int64_t i, int64_t j)
{
    edge_key t = e[i];
    e[i] = e[j];
    e[j] = t;
}

/* Reorder e[0..m) so that e[0..k) are its k best edges (quickselect, median-of-three pivots; a
 * range that does not shrink fast enough is sorted instead, so the worst case is O(m log m)). */
static void select_best(edge_key *e, int64_t m, int64_t k)
{
    int64_t lo = 0, hi = m, rounds = 0, limit = 16;
    while ((int64_t)1 << (limit / 2) < m)
        limit += 2;
    while (hi - lo > 16 && rounds++ < limit) {
        int64_t mid = lo + (hi - lo) / 2, i = lo - 1, j = hi;
        edge_key pivot;
        if (edge_key_cmp(&e[mid], &e[lo]) < 0)
            swap_edges(e, mid, lo);
        if (edge_key_cmp(&e[hi - 1], &e[lo]) < 0)
            swap_edges(e, hi - 1, lo);
        if (edge_key_cmp(&e[hi - 1], &e[mid]) < 0)
            swap_edges(e, hi - 1, mid);
        pivot = e[mid];
        for (;;) { /* Hoare partition: e[lo..j] <= pivot <= e[j+1..hi) */
            do
                i++;
            while (edge_key_cmp(&e[i], &pivot) < 0);
            do
                j--;
            while (edge_key_cmp(&e[j], &pivot) > 0);
            if (i >= j)
                break;
            swap_edges(e, i, j);
        }
        if (k <= j)
            hi = j + 1;
        else
            lo = j + 1;
    }
    if (lo < k && k < hi)
        qsort(e + lo, (size_t)(hi - lo), sizeof *e, edge_key_cmp);
}

/* Remove repeated edges in O(n + m): bucket by first end, then mark second ends. */
static int dedup_edges(edge_key *e, size_t *m, int32_t n)
{
    int32_t *start = rsloc__zalloc_array((size_t)n + 1, sizeof *start);
    int32_t *mark = rsloc__alloc_array((size_t)n, sizeof *mark);
    edge_key *by_a = rsloc__alloc_array(*m, sizeof *by_a);
    size_t i, u = 0;
    int32_t a;
    if (start == NULL || mark == NULL || by_a == NULL) {
        free(start);
        free(mark);
        free(by_a);
        return RSLOC_ENOMEM;
    }
    for (i = 0; i < *m; i++)
        start[e[i].a + 1]++;
    for (a = 0; a < n; a++) {
        start[a + 1] += start[a];
        mark[a] = -1;
    }
    for (i = 0; i < *m; i++)
        by_a[start[e[i].a]++] = e[i];
    for (i = 0; i < *m; i++) {
        if (mark[by_a[i].b] != by_a[i].a) {
            mark[by_a[i].b] = by_a[i].a;
            e[u++] = by_a[i];
        }
    }
    *m = u;
    free(start);
    free(mark);
    free(by_a);
    return RSLOC_OK;
}

/* Is hit s outranked (higher similarity; ties: lower hit index) by a hit of its own patch
 * within radius (squared: r2) on the ground? */
static int dominated(const grid *gr, int32_t s, const int32_t *lo, const int32_t *hi, int runs,
                     double r2)
{
    int r;
    int32_t t;
    for (r = 0; r < runs; r++) {
        for (t = lo[r]; t < hi[r]; t++) {
            double dx, dy;
            if (gr->patch[t] != gr->patch[s] || t == s)
                continue;
            if (gr->score[t] < gr->score[s] ||
                (gr->score[t] == gr->score[s] && gr->idx[t] > gr->idx[s]))
                continue;
            dx = (gr->lon[t] - gr->lon[s]) * (gr->mlon[s] + gr->mlon[t]);
            dy = (gr->lat[t] - gr->lat[s]) * (gr->mlat[s] + gr->mlat[t]);
            if (0.25 * (dx * dx + dy * dy) <= r2)
                return 1;
        }
    }
    return 0;
}

/* Duplicate suppression (README: "Nodes"): alive[s] = 0 for every dominated hit. Returns how
 * many were dropped. */
static int32_t suppress(const grid *gr, double radius, unsigned char *alive)
{
    stencil_cursor cur;
    int32_t c, s, lo[STENCIL_ROWS], hi[STENCIL_ROWS], dropped = 0;
    memset(alive, 1, (size_t)gr->n);
    if (radius <= 0)
        return 0;
    memset(&cur, 0, sizeof cur);
    for (c = 0; c < gr->n_cells; c++) {
        int runs = neighbour_runs(gr, c, &cur, lo, hi);
        for (s = gr->cell_start[c]; s < gr->cell_start[c + 1]; s++)
            if (dominated(gr, s, lo, hi, runs, radius * radius)) {
                alive[s] = 0;
                dropped++;
            }
    }
    return dropped;
}

/* The edge rule and budgets (README: "Edges"): every hit picks, for each other patch, its best
 * edge into that patch and keeps its max_edges_per_node best picks; an edge exists when either
 * end picked it; the max_edges_total (B) best edges survive. Picks are cut to the best 2B
 * whenever they reach 3B, which bounds memory without changing the outcome. */
int rsloc__build_edges(const grid *gr, int32_t n_patches, const rsloc_geo_params *p,
                       edge_key **edges_out, int64_t *m_out, int32_t *n_suppressed, char *err,
                       size_t err_len)
{
    int32_t n = gr->n, c, s, t, q, lo[STENCIL_ROWS], hi[STENCIL_ROWS];
    stencil_cursor cur;
    int runs, r;
    uint64_t checks = 0;
    size_t widest = 0, m = 0, cap = 0;
    edge_key *slot = NULL, *edges = NULL;
    int32_t *stamp = NULL, *touched = NULL;
    unsigned char *alive = NULL;
    double *screen = NULL;
    double tol = p->tolerance_m, min_d = p->min_distance_m;
    double tol2 = (tol * (1 + 1e-6) + 1e-6) * (tol * (1 + 1e-6) + 1e-6);
    int rc = RSLOC_ENOMEM;

    memset(&cur, 0, sizeof cur);
    for (c = 0; c < gr->n_cells; c++) {
        uint64_t size = (uint64_t)(gr->cell_start[c + 1] - gr->cell_start[c]);
        runs = neighbour_runs(gr, c, &cur, lo, hi);
        for (r = 0; r < runs; r++) {
            size_t len = (size_t)(hi[r] - lo[r]);
            widest = len > widest ? len : widest;
            checks += size * len;
        }
        if (checks > (uint64_t)p->max_pair_checks)
            return rsloc__fail(err, err_len, RSLOC_ELIMIT,
                               "%ld hits need more than max_pair_checks = %lld pair checks "
                               "(too many hits within reach of each other): pass fewer or "
                               "raise the limit",
                               (long)n, (long long)p->max_pair_checks);
    }

    slot = rsloc__alloc_array((size_t)n_patches, sizeof *slot);
    stamp = rsloc__zalloc_array((size_t)n_patches, sizeof *stamp);
    touched = rsloc__alloc_array((size_t)n_patches, sizeof *touched);
    screen = rsloc__alloc_array(widest, sizeof *screen);
    alive = rsloc__alloc_array((size_t)n, sizeof *alive);
    if (slot == NULL || stamp == NULL || touched == NULL || screen == NULL || alive == NULL)
        goto done;
    *n_suppressed = suppress(gr, p->suppress_ratio * tol, alive);

    memset(&cur, 0, sizeof cur);
    for (c = 0; c < gr->n_cells; c++) {
        runs = neighbour_runs(gr, c, &cur, lo, hi);
        for (s = gr->cell_start[c]; s < gr->cell_start[c + 1]; s++) {
            int32_t i = s, ps = gr->patch[s], nt = 0;
            double lon = gr->lon[s], lat = gr->lat[s], mlon = gr->mlon[s], mlat = gr->mlat[s];
            double x = gr->x[s], y = gr->y[s];
            float si = gr->score[s];
            if (!alive[s])
                continue;
            for (r = 0; r < runs; r++) {
                int32_t len = hi[r] - lo[r];
                const double *lon_r = gr->lon + lo[r], *lat_r = gr->lat + lo[r];
                const double *mlon_r = gr->mlon + lo[r], *mlat_r = gr->mlat + lo[r];
                const double *x_r = gr->x + lo[r], *y_r = gr->y + lo[r];
                const int32_t *patch_r = gr->patch + lo[r];
                /* Screen without square roots or branches: with A = g^2 + p^2 - tol^2,
                 * |g - p| <= tol  <=>  A <= 0 or A^2 <= 4 g^2 p^2 (g ground, p pixel
                 * distance). tol2 is a hair looser than tol^2; the exact test follows. */
                for (t = 0; t < len; t++) {
                    double dx = (lon_r[t] - lon) * (mlon + mlon_r[t]);
                    double dy = (lat_r[t] - lat) * (mlat + mlat_r[t]);
                    double ex = x_r[t] - x, ey = y_r[t] - y;
                    double g2 = 0.25 * (dx * dx + dy * dy), p2 = ex * ex + ey * ey;
                    double a = g2 + p2 - tol2, q = a * a - 4.0 * g2 * p2;
                    screen[t] = a <= 0 ? -1.0 : q;
                }
                for (t = 0; t < len; t++) {
                    edge_key e;
                    int32_t j = lo[r] + t, pt = patch_r[t];
                    double dx, dy, dg, ex, ey, res;
                    if (screen[t] > 0 || pt == ps || !alive[j])
                        continue;
                    /* Exact test, the same arithmetic from either end. */
                    dx = (lon_r[t] - lon) * (mlon + mlon_r[t]);
                    dy = (lat_r[t] - lat) * (mlat + mlat_r[t]);
                    dg = 0.5 * sqrt(dx * dx + dy * dy);
                    ex = x_r[t] - x;
                    ey = y_r[t] - y;
                    res = fabs(dg - sqrt(ex * ex + ey * ey));
                    if (!(res <= tol && dg > min_d))
                        continue;
                    e.res = (float)res;
                    e.ssum = si + gr->score[j];
                    e.a = i < j ? i : j;
                    e.b = i < j ? j : i;
                    if (stamp[pt] != s + 1) {
                        stamp[pt] = s + 1;
                        slot[pt] = e;
                        touched[nt++] = pt;
                    } else if (edge_key_cmp(&e, &slot[pt]) < 0) {
                        slot[pt] = e;
                    }
                }
            }
            if (rsloc__reserve((void **)&edges, &cap, m + (size_t)nt, sizeof *edges))
                goto done;
            for (q = 0; q < nt; q++)
                edges[m + (size_t)q] = slot[touched[q]];
            if (nt > p->max_edges_per_node) {
                qsort(edges + m, (size_t)nt, sizeof *edges, edge_key_cmp);
                nt = p->max_edges_per_node;
            }
            m += (size_t)nt;
            /* Each edge appears at most twice, so the best 2B picks hold the best B edges. */
            if ((uint64_t)m / 3 >= (uint64_t)p->max_edges_total) {
                select_best(edges, (int64_t)m, 2 * p->max_edges_total);
                m = 2 * (size_t)p->max_edges_total;
            }
        }
    }
    if (dedup_edges(edges, &m, n) != RSLOC_OK)
        goto done;
    if ((int64_t)m > p->max_edges_total) {
        select_best(edges, (int64_t)m, p->max_edges_total);
        m = (size_t)p->max_edges_total;
    }
    *edges_out = edges;
    *m_out = (int64_t)m;
    edges = NULL;
    rc = RSLOC_OK;
done:
    free(slot);
    free(stamp);
    free(touched);
    free(screen);
    free(alive);
    free(edges);
    return rc;
}
