/* search.engines.postgres._kernels: the facet pass over packed facet records, in one
 * loop, and the other per-record and per-cell loops of a search.
 *
 * The records are those of `search.engines.postgres.blocks` (big-endian, as PostgreSQL's
 * `*send` functions write them). Their layout is defined once, in `record_layout.py`;
 * `record_layout.h`, generated from it, gives the offsets read here (`OFF_*`), the
 * record sizes (`BASE_SIZE`: a coach record, the first fields of a tutor's;
 * `TUTOR_SIZE`) and the flag bits (`F_*`).
 *
 * `facet_pass` applies the filters and counts every facet of
 * `search.engines.postgres.blocks.Counts` in one pass over the records, where numpy needs
 * an array operation per set bit (a mask and a count) and a second gather of the results
 * for their statistics. Integer arithmetic only, so the counts are exact and equal the
 * SQL pass's.
 *
 * `edge_test` decides the records of the cells a radius's edge crosses: on the sphere
 * where that is certain, else by Vincenty's inverse formula on the WGS84 ellipsoid,
 * leaving to PostGIS only those within a margin of the radius.
 *
 * The rest of a query's loops over cells and records live here too, each replacing
 * several numpy operations or a Python loop: the radius cover (`radius_cover`,
 * `grid_runs`), the assembly of a query's blocks from the copies held (`gather`), the
 * text matches held per block (`text_gather`), the rating/price/relevance page (`page`,
 * a heap) and the distance page's candidates (`nearest`), the map clusters (`clusters`,
 * a hash table), the page ids as hex (`hex_ids`), the page's JSON items
 * (`items_json`), the map points cut from the items (`points_json`) and the page's
 * distances, to the bit those of PostGIS (`st_distance`).
 *
 * Only the CPython C API (buffer protocol) is used: no numpy headers at build time. The
 * geodesic of `st_distance` is PROJ's (GeographicLib's C code, `geodesic.h`), the one
 * PostGIS calls: PROJ's headers and library are a build requirement (setup.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <geodesic.h>

#include "record_layout.h"

/* Distinct currencies of one result set: more than this many is an error (the catalogue
 * holds a few; the providers' CHECK constraint allows any three letters). */
#define MAX_CURRENCIES 256
/* The currency hash table of `facet_pass`: twice MAX_CURRENCIES slots, never full. */
#define CURRENCY_HASH_BITS 9
#define CURRENCY_HASH (1 << CURRENCY_HASH_BITS)

static inline uint64_t be64(const unsigned char *p) {
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
           ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
           ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

static inline int32_t be32s(const unsigned char *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     (uint32_t)p[3]);
}

static inline int16_t be16s(const unsigned char *p) {
    return (int16_t)(((uint16_t)p[0] << 8) | (uint16_t)p[1]);
}

typedef struct {
    unsigned char code[3];
    uint32_t key; /* the three letters as one big-endian number (`currency_key`) */
    long long count, min, max, sum;
} CurrencyStats;

/* A record's three currency bytes as one number, compared at once. */
static inline uint32_t currency_key(const unsigned char *p) {
    return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | (uint32_t)p[2];
}

/* An optional int argument: 0 when None, else 1 with *out set; -1 on error. */
static int optional_ll(PyObject *o, long long *out) {
    if (o == Py_None)
        return 0;
    *out = PyLong_AsLongLong(o);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    return 1;
}

static int optional_mask(PyObject *o, uint64_t *out) {
    if (o == Py_None)
        return 0;
    *out = (uint64_t)PyLong_AsUnsignedLongLongMask(o);
    if (*out == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    return 1;
}

/* A bool mask argument (None, or a buffer of exactly n bytes); 0 = None, 1 = got, -1. */
static int optional_mask_buffer(PyObject *o, Py_buffer *view, Py_ssize_t n, int writable,
                                const char *name) {
    if (o == Py_None)
        return 0;
    if (PyObject_GetBuffer(o, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len != n) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes for %zd records", name, view->len, n);
        PyBuffer_Release(view);
        return -1;
    }
    return 1;
}

/* A required bool mask argument: a buffer of exactly n bytes; 1 = got, -1 on error. */
static int mask_buffer(PyObject *o, Py_buffer *view, Py_ssize_t n, int writable,
                       const char *name) {
    if (o == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s is a%s buffer, not None", name,
                     writable ? " writable" : "");
        return -1;
    }
    return optional_mask_buffer(o, view, n, writable, name);
}

/* Acquires the packed records `o` (a buffer of whole records of `itemsize` bytes) into
 * `view`; the record count, or -1 with an exception set and nothing held. */
static Py_ssize_t records_buffer(PyObject *o, Py_buffer *view, Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%zd bytes are not whole records of %zd", view->len,
                     itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return view->len / itemsize;
}

/* Appends the int i to `list`; 0, or -1 with an exception set. */
static int append_index(PyObject *list, Py_ssize_t i) {
    PyObject *v = PyLong_FromSsize_t(i);
    if (v == NULL)
        return -1;
    int rc = PyList_Append(list, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *counts_tuple(const long long *counts, Py_ssize_t n) {
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLongLong(counts[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

PyDoc_STRVAR(facet_pass_doc,
"facet_pass(records, itemsize, keep, hits, by_cat, min_price, max_price, currency,\n"
"           min_rating, mode, kinds, cat_mask, lang_mask, lang_extra)\n"
"--\n\n"
"The facet pass of `search.engines.postgres.blocks.Blocks.count` over `records` (packed big-endian\n"
"records of `itemsize` bytes, n = len / itemsize).\n\n"
"A record is in the base set when `keep` (None, or n bytes 0/1) holds it and it passes\n"
"the price bounds (`min_price`, `max_price`, minor units, inclusive, None = open),\n"
"`currency` (3 bytes or None), `min_rating` (hundredths, rating >= it, None = any),\n"
"`mode` (required flag bits: 0, 1 online, 2 in person) and `kinds` (0 = any, else\n"
"bit 0 coach, bit 1 mentor). cat_ok: cat_bits & `cat_mask` != 0 (None: every record);\n"
"lang_ok: language_bits & `lang_mask` != 0 or `lang_extra[i]` (None: every record).\n\n"
"Writes `hits[i]` = base & cat_ok & lang_ok and `by_cat[i]` = base & cat_ok (n bytes\n"
"each, writable). Returns (scanned, total, cat, lang, rating, currencies): scanned =\n"
"records in base & lang_ok; total = hits; cat = 64 counts per cat bit over base &\n"
"lang_ok; lang = 64 counts per language bit over base & cat_ok; rating = 4 counts of\n"
"the hits per bucket [1,2) [2,3) [3,4) [4,5] (rating >= 100 only); currencies = list\n"
"of (code bytes, count, min, max, sum of price) over the hits, in first-seen order.\n"
"ValueError when a buffer has the wrong size or a hit's currency is not A-Z letters.");

static PyObject *facet_pass(PyObject *self, PyObject *args) {
    PyObject *records_o, *keep_o, *hits_o, *by_cat_o, *min_price_o, *max_price_o,
        *currency_o, *min_rating_o, *cat_mask_o, *lang_mask_o, *lang_extra_o;
    Py_ssize_t itemsize;
    int mode, kinds;
    if (!PyArg_ParseTuple(args, "OnOOOOOOOiiOOO", &records_o, &itemsize, &keep_o, &hits_o,
                          &by_cat_o, &min_price_o, &max_price_o, &currency_o, &min_rating_o,
                          &mode, &kinds, &cat_mask_o, &lang_mask_o, &lang_extra_o))
        return NULL;
    if (itemsize < BASE_SIZE) {
        PyErr_Format(PyExc_ValueError, "a record is at least %d bytes, not %zd", BASE_SIZE,
                     itemsize);
        return NULL;
    }
    long long min_price = 0, max_price = 0, min_rating = 0;
    uint64_t cat_mask = 0, lang_mask = 0;
    int has_min_price = optional_ll(min_price_o, &min_price);
    int has_max_price = optional_ll(max_price_o, &max_price);
    int has_min_rating = optional_ll(min_rating_o, &min_rating);
    int has_cat = optional_mask(cat_mask_o, &cat_mask);
    int has_lang = optional_mask(lang_mask_o, &lang_mask);
    if (has_min_price < 0 || has_max_price < 0 || has_min_rating < 0 || has_cat < 0 ||
        has_lang < 0)
        return NULL;
    const char *currency = NULL;
    if (currency_o != Py_None) {
        if (!PyBytes_Check(currency_o) || PyBytes_GET_SIZE(currency_o) != 3) {
            PyErr_SetString(PyExc_ValueError, "currency is 3 bytes or None");
            return NULL;
        }
        currency = PyBytes_AS_STRING(currency_o);
    }

    Py_buffer rec, keep, hits, by_cat, extra;
    Py_ssize_t n = records_buffer(records_o, &rec, itemsize);
    if (n < 0)
        return NULL;
    PyObject *result = NULL;
    int got_keep = 0, got_hits = 0, got_by_cat = 0, got_extra = 0;
    if ((got_keep = optional_mask_buffer(keep_o, &keep, n, 0, "keep")) < 0)
        goto done;
    if ((got_hits = mask_buffer(hits_o, &hits, n, 1, "hits")) < 0 ||
        (got_by_cat = mask_buffer(by_cat_o, &by_cat, n, 1, "by_cat")) < 0 ||
        (got_extra = optional_mask_buffer(lang_extra_o, &extra, n, 0, "lang_extra")) < 0)
        goto done;

    long long cat_counts[64] = {0}, lang_counts[64] = {0}, rating[4] = {0};
    long long scanned = 0, total = 0;
    CurrencyStats cur[MAX_CURRENCIES];
    int ncur = 0, bad_currency = 0;
    short slot[CURRENCY_HASH]; /* currency hash -> index in `cur`, -1 for none */
    memset(slot, 0xFF, sizeof slot);
    uint32_t want_key = currency != NULL ? currency_key((const unsigned char *)currency) : 0;
    const unsigned char *base = (const unsigned char *)rec.buf;
    const unsigned char *keep_p = got_keep ? (const unsigned char *)keep.buf : NULL;
    const unsigned char *extra_p = got_extra ? (const unsigned char *)extra.buf : NULL;
    unsigned char *hits_p = (unsigned char *)hits.buf;
    unsigned char *by_cat_p = (unsigned char *)by_cat.buf;
    int mode_bits = mode == 1 ? F_ONLINE : mode == 2 ? F_IN_PERSON : 0;

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *r = base + i * itemsize;
        int ok = keep_p == NULL || keep_p[i];
        int32_t price = be32s(r + OFF_PRICE);
        int16_t rate = be16s(r + OFF_RATING);
        int flags = be16s(r + OFF_FLAGS);
        if (ok && has_min_price && price < min_price)
            ok = 0;
        if (ok && has_max_price && price > max_price)
            ok = 0;
        if (ok && currency != NULL && currency_key(r + OFF_CURRENCY) != want_key)
            ok = 0;
        if (ok && has_min_rating && rate < min_rating)
            ok = 0;
        if (ok && mode_bits && !(flags & mode_bits))
            ok = 0;
        if (ok && kinds) {
            int mentor = (flags & F_MENTOR) != 0;
            ok = mentor ? (kinds & 2) != 0 : (kinds & 1) != 0;
        }
        if (!ok) {
            hits_p[i] = 0;
            by_cat_p[i] = 0;
            continue;
        }
        uint64_t cat = be64(r + OFF_CAT), lang = be64(r + OFF_LANG);
        int cat_ok = !has_cat || (cat & cat_mask) != 0;
        int lang_ok = !has_lang || (lang & lang_mask) != 0 || (extra_p != NULL && extra_p[i]);
        by_cat_p[i] = (unsigned char)cat_ok;
        hits_p[i] = (unsigned char)(cat_ok && lang_ok);
        if (lang_ok) {
            scanned++;
            for (uint64_t x = cat; x; x &= x - 1)
                cat_counts[__builtin_ctzll(x)]++;
        }
        if (cat_ok)
            for (uint64_t x = lang; x; x &= x - 1)
                lang_counts[__builtin_ctzll(x)]++;
        if (!(cat_ok && lang_ok))
            continue;
        total++;
        if (rate >= 100)
            rating[(rate / 100 < 4 ? rate / 100 : 4) - 1]++;
        const unsigned char *code = r + OFF_CURRENCY;
        uint32_t key = currency_key(code);
        /* its slot in `cur`: open addressing on a multiplicative hash, found at the first
         * probe but for a new currency (coach results change currency from one record
         * to the next: a scan of `cur` from the previous one mispredicted on most) */
        unsigned h = (key * 2654435761u) >> (32 - CURRENCY_HASH_BITS);
        int c = slot[h];
        if (c < 0 || cur[c].key != key) {
            if (code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z' ||
                code[2] < 'A' || code[2] > 'Z') {
                bad_currency = 1;
                break;
            }
            while (slot[h] >= 0 && cur[slot[h]].key != key)
                h = (h + 1) & (CURRENCY_HASH - 1);
            c = slot[h];
            if (c < 0) {
                if (ncur == MAX_CURRENCIES) {
                    bad_currency = 2;
                    break;
                }
                c = ncur++;
                memcpy(cur[c].code, code, 3);
                cur[c].key = key;
                cur[c].count = 0;
                cur[c].sum = 0;
                cur[c].min = cur[c].max = price;
                slot[h] = (short)c;
            }
        }
        cur[c].count++;
        cur[c].sum += price;
        if (price < cur[c].min)
            cur[c].min = price;
        if (price > cur[c].max)
            cur[c].max = price;
    }
    Py_END_ALLOW_THREADS

    if (bad_currency == 1) {
        PyErr_SetString(PyExc_ValueError, "a facet record's currency is not three letters A-Z");
        goto done;
    }
    if (bad_currency == 2) {
        PyErr_Format(PyExc_ValueError, "more than %d currencies in one result set",
                     MAX_CURRENCIES);
        goto done;
    }
    PyObject *currencies = PyList_New(ncur);
    if (currencies == NULL)
        goto done;
    for (int c = 0; c < ncur; c++) {
        PyObject *item = Py_BuildValue("(y#LLLL)", (const char *)cur[c].code, (Py_ssize_t)3,
                                       cur[c].count, cur[c].min, cur[c].max, cur[c].sum);
        if (item == NULL) {
            Py_DECREF(currencies);
            goto done;
        }
        PyList_SET_ITEM(currencies, c, item);
    }
    PyObject *cat_t = counts_tuple(cat_counts, 64);
    PyObject *lang_t = counts_tuple(lang_counts, 64);
    PyObject *rating_t = counts_tuple(rating, 4);
    if (cat_t && lang_t && rating_t)
        result = Py_BuildValue("(LLNNNN)", scanned, total, cat_t, lang_t, rating_t, currencies);
    else {
        Py_XDECREF(cat_t);
        Py_XDECREF(lang_t);
        Py_XDECREF(rating_t);
        Py_DECREF(currencies);
    }

done:
    if (got_extra > 0)
        PyBuffer_Release(&extra);
    if (got_by_cat > 0)
        PyBuffer_Release(&by_cat);
    if (got_hits > 0)
        PyBuffer_Release(&hits);
    if (got_keep > 0)
        PyBuffer_Release(&keep);
    PyBuffer_Release(&rec);
    return result;
}

static inline double be_double(const unsigned char *p) {
    uint64_t u = be64(p);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

#define WGS84_A 6378137.0
#define WGS84_F (1 / 298.257223563)
#define DEG (M_PI / 180.0)
#define EARTH_R 6371008.7714 /* the PostGIS sphere: (2a + b) / 3 of WGS84 */

/* The geodesic distance in metres on the WGS84 ellipsoid between two points (degrees),
 * by Vincenty's inverse formula (T. Vincenty, "Direct and inverse solutions of geodesics
 * on the ellipsoid with application of nested equations", Survey Review 23(176), 1975:
 * equations (3)-(6), (10)-(13), (19)); NaN when the iteration does not converge in 100
 * steps (nearly antipodal points). Tests compare it with GeographicLib. */
static double vincenty(double lat1, double lng1, double lat2, double lng2) {
    const double f = WGS84_F, a = WGS84_A, b = (1 - WGS84_F) * WGS84_A;
    double big_l = (lng2 - lng1) * DEG;
    double u1 = atan((1 - f) * tan(lat1 * DEG)), u2 = atan((1 - f) * tan(lat2 * DEG));
    double sin_u1 = sin(u1), cos_u1 = cos(u1), sin_u2 = sin(u2), cos_u2 = cos(u2);
    double lam = big_l, sin_sigma = 0, cos_sigma = 0, sigma = 0, cos2_alpha = 0, cos_2sm = 0;
    int converged = 0;
    for (int k = 0; k < 100; k++) {
        double sin_lam = sin(lam), cos_lam = cos(lam);
        sin_sigma = hypot(cos_u2 * sin_lam, cos_u1 * sin_u2 - sin_u1 * cos_u2 * cos_lam);
        if (sin_sigma == 0.0)
            return 0.0; /* the same point */
        cos_sigma = sin_u1 * sin_u2 + cos_u1 * cos_u2 * cos_lam;
        sigma = atan2(sin_sigma, cos_sigma);
        double sin_alpha = cos_u1 * cos_u2 * sin_lam / sin_sigma;
        cos2_alpha = 1 - sin_alpha * sin_alpha;
        /* an equatorial line: cos2_alpha = 0 */
        cos_2sm = cos2_alpha > 0 ? cos_sigma - 2 * sin_u1 * sin_u2 / cos2_alpha : 0.0;
        double c = f / 16 * cos2_alpha * (4 + f * (4 - 3 * cos2_alpha));
        double previous = lam;
        lam = big_l + (1 - c) * f * sin_alpha *
                          (sigma + c * sin_sigma * (cos_2sm + c * cos_sigma *
                                                                  (-1 + 2 * cos_2sm * cos_2sm)));
        if (fabs(lam - previous) <= 1e-12) {
            converged = 1;
            break;
        }
    }
    if (!converged)
        return NAN;
    double u_sq = cos2_alpha * (a * a - b * b) / (b * b);
    double big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)));
    double big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)));
    double delta_sigma =
        big_b * sin_sigma *
        (cos_2sm + big_b / 4 *
                       (cos_sigma * (-1 + 2 * cos_2sm * cos_2sm) -
                        big_b / 6 * cos_2sm * (-3 + 4 * sin_sigma * sin_sigma) *
                            (-3 + 4 * cos_2sm * cos_2sm)));
    return b * big_a * (sigma - delta_sigma);
}

PyDoc_STRVAR(vincenty_doc,
"vincenty(lat1, lng1, lat2, lng2)\n"
"--\n\n"
"The geodesic distance in metres on the WGS84 ellipsoid between two points (degrees),\n"
"by Vincenty's inverse formula (Survey Review 23(176), 1975); NaN when its iteration\n"
"does not converge (nearly antipodal points).");

static PyObject *vincenty_py(PyObject *self, PyObject *args) {
    double lat1, lng1, lat2, lng2;
    if (!PyArg_ParseTuple(args, "dddd", &lat1, &lng1, &lat2, &lng2))
        return NULL;
    return PyFloat_FromDouble(vincenty(lat1, lng1, lat2, lng2));
}

/* PostGIS's normalizations of a point's radians (liblwgeom/lwgeodetic.c,
 * `longitude_radians_normalize`, `latitude_radians_normalize`), applied by
 * `geographic_point_init` before any distance. */
static double longitude_radians_normalize(double lon) {
    if (lon == -1.0 * M_PI)
        return M_PI;
    if (lon == -2.0 * M_PI)
        return 0.0;
    if (lon > 2.0 * M_PI)
        lon = remainder(lon, 2.0 * M_PI);
    if (lon < -2.0 * M_PI)
        lon = remainder(lon, -2.0 * M_PI);
    if (lon > M_PI)
        lon = -2.0 * M_PI + lon;
    if (lon < -1.0 * M_PI)
        lon = 2.0 * M_PI + lon;
    if (lon == -2.0 * M_PI)
        lon *= -1.0;
    return lon;
}

static double latitude_radians_normalize(double lat) {
    if (lat > 2.0 * M_PI)
        lat = remainder(lat, 2.0 * M_PI);
    if (lat < -2.0 * M_PI)
        lat = remainder(lat, -2.0 * M_PI);
    if (lat > M_PI)
        lat = M_PI - lat;
    if (lat < -1.0 * M_PI)
        lat = -1.0 * M_PI - lat;
    if (lat > M_PI_2)
        lat = M_PI - lat;
    if (lat < -1.0 * M_PI_2)
        lat = -1.0 * M_PI - lat;
    return lat;
}

/* A point (degrees) as PostGIS's geodesic sees it: to radians (`deg2rad`), normalized,
 * back to degrees (`spheroid_distance`), the same operations in the same order. */
static void postgis_degrees(double lat, double lng, double *out_lat, double *out_lng) {
    *out_lat = latitude_radians_normalize(M_PI * lat / 180.0) * 180.0 / M_PI;
    *out_lng = longitude_radians_normalize(M_PI * lng / 180.0) * 180.0 / M_PI;
}

PyDoc_STRVAR(st_distance_doc,
"st_distance(records, itemsize, idx, lat, lng)\n"
"--\n\n"
"The WGS84 distances in metres (a list of floats) of tutor `records[idx]` (packed\n"
"big-endian, `itemsize` bytes each, its lat/lng float8 fields) from (lat, lng)\n"
"(degrees): PostGIS's `ST_Distance(record::geography, point::geography)`, computed as\n"
"PostGIS 3 computes it for two points (geography_measurement.c `geography_distance`,\n"
"lwspheroid.c `spheroid_distance`): the points through `geographic_point_init`'s\n"
"radians, GeographicLib's `geod_inverse` (C. F. F. Karney, \"Algorithms for\n"
"geodesics\", J. Geodesy 87, 2013) from PROJ's library on the ellipsoid of SRID 4326\n"
"(a = 6378137, b = a (1 - 1/298.257223563), f = (a - b) / a as `spheroid_init`\n"
"computes it), rounded to 1e-8 m (`round(d * 1e8) / 1e8`, PostGIS ticket #2168).\n"
"With the PROJ library PostGIS uses, the result is PostGIS's to the bit. ValueError\n"
"when an index is out of range.");

static PyObject *st_distance(PyObject *self, PyObject *args) {
    PyObject *records_o, *idx_o;
    Py_ssize_t itemsize;
    double lat, lng;
    if (!PyArg_ParseTuple(args, "OnO!dd", &records_o, &itemsize, &PyList_Type, &idx_o, &lat,
                          &lng))
        return NULL;
    if (itemsize < TUTOR_SIZE) {
        PyErr_SetString(PyExc_ValueError, "tutor records are needed");
        return NULL;
    }
    static struct geod_geodesic g;
    static int ready = 0;
    if (!ready) {
        const double a = 6378137.0, b = a * (1.0 - 1.0 / 298.257223563);
        geod_init(&g, a, (a - b) / a);
        ready = 1;
    }
    Py_buffer rec;
    Py_ssize_t n = records_buffer(records_o, &rec, itemsize);
    if (n < 0)
        return NULL;
    Py_ssize_t m = PyList_GET_SIZE(idx_o);
    PyObject *result = PyList_New(m);
    if (result == NULL)
        goto done;
    double lat2, lng2;
    postgis_degrees(lat, lng, &lat2, &lng2);
    const unsigned char *base = rec.buf;
    for (Py_ssize_t k = 0; k < m; k++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(idx_o, k));
        if (i == -1 && PyErr_Occurred())
            goto fail;
        if (i < 0 || i >= n) {
            PyErr_Format(PyExc_ValueError, "record %zd of %zd", i, n);
            goto fail;
        }
        const unsigned char *r = base + i * itemsize;
        double lat1, lng1, s12 = 0.0;
        postgis_degrees(be_double(r + OFF_LAT), be_double(r + OFF_LNG), &lat1, &lng1);
        geod_inverse(&g, lat1, lng1, lat2, lng2, &s12, NULL, NULL);
        PyObject *v = PyFloat_FromDouble(round(s12 * 1.0e8) / 1.0e8);
        if (v == NULL)
            goto fail;
        PyList_SET_ITEM(result, k, v);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    PyBuffer_Release(&rec);
    return result;
}

PyDoc_STRVAR(edge_test_doc,
"edge_test(records, itemsize, edge, keep, lat, lng, cos_in, cos_out, radius_m, margin)\n"
"--\n\n"
"The radius test of `search.engines.postgres.blocks.Blocks.radius_test` over tutor `records` (packed\n"
"big-endian, `itemsize` bytes each, its lat/lng float8 fields). Writes `keep[i]`\n"
"(n bytes, writable) = 1 for every record not flagged in `edge` (n bytes 0/1), for the\n"
"edge records whose unit vector's dot product with the centre's (lat, lng, degrees) is\n"
"at least `cos_in`, and for those between `cos_out` and `cos_in` (the ring) within\n"
"`radius_m` - `margin` metres by Vincenty's distance; 0 otherwise. Returns the\n"
"indexes (a list, ascending) of the ring records within `margin` of `radius_m` or\n"
"where the iteration did not converge: PostGIS decides those (their `keep` is 0).\n"
"ValueError when a buffer has the wrong size.");

static PyObject *edge_test(PyObject *self, PyObject *args) {
    PyObject *records_o, *edge_o, *keep_o;
    Py_ssize_t itemsize;
    double lat, lng, cos_in, cos_out, radius_m, margin;
    if (!PyArg_ParseTuple(args, "OnOOdddddd", &records_o, &itemsize, &edge_o, &keep_o, &lat,
                          &lng, &cos_in, &cos_out, &radius_m, &margin))
        return NULL;
    if (itemsize < TUTOR_SIZE) {
        PyErr_Format(PyExc_ValueError, "a record with a position is at least %d bytes, not %zd",
                     TUTOR_SIZE, itemsize);
        return NULL;
    }
    Py_buffer rec, edge, keep;
    Py_ssize_t n = records_buffer(records_o, &rec, itemsize);
    if (n < 0)
        return NULL;
    PyObject *undecided = NULL;
    int got_edge = 0, got_keep = 0;
    if ((got_edge = mask_buffer(edge_o, &edge, n, 0, "edge")) < 0 ||
        (got_keep = mask_buffer(keep_o, &keep, n, 1, "keep")) < 0)
        goto done;
    if ((undecided = PyList_New(0)) == NULL)
        goto done;
    const unsigned char *base = (const unsigned char *)rec.buf;
    const unsigned char *edge_p = (const unsigned char *)edge.buf;
    unsigned char *keep_p = (unsigned char *)keep.buf;
    double phi = lat * DEG, lam = lng * DEG;
    double px = cos(phi) * cos(lam), py = cos(phi) * sin(lam), pz = sin(phi);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!edge_p[i]) {
            keep_p[i] = 1;
            continue;
        }
        const unsigned char *r = base + i * itemsize;
        double y = be_double(r + OFF_LAT), x = be_double(r + OFF_LNG);
        double rphi = y * DEG, rlam = x * DEG, c = cos(rphi);
        double dot = c * cos(rlam) * px + c * sin(rlam) * py + sin(rphi) * pz;
        keep_p[i] = 0;
        if (dot >= cos_in) {
            keep_p[i] = 1;
            continue;
        }
        if (!(dot >= cos_out))
            continue;
        double d = vincenty(lat, lng, y, x);
        if (d <= radius_m - margin) {
            keep_p[i] = 1;
        } else if (!(d > radius_m + margin)) {
            if (append_index(undecided, i) < 0) {
                Py_CLEAR(undecided);
                goto done;
            }
        }
    }

done:
    if (got_keep > 0)
        PyBuffer_Release(&keep);
    if (got_edge > 0)
        PyBuffer_Release(&edge);
    PyBuffer_Release(&rec);
    return undecided;
}

/* ------------------------------------------------------------------ cell covers */

#define CELL_DEG (360.0 / 16384.0)
#define COLUMN 16384

/* Appends (lo, hi, edge) int64 triples to a growing buffer. */
typedef struct {
    int64_t *v;
    Py_ssize_t n, cap;
} Runs;

static int runs_push(Runs *r, int64_t lo, int64_t hi, int64_t edge) {
    if (r->n + 3 > r->cap) {
        Py_ssize_t cap = r->cap ? 2 * r->cap : 192;
        int64_t *v = PyMem_Realloc(r->v, (size_t)cap * sizeof(int64_t));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = lo;
    r->v[r->n++] = hi;
    r->v[r->n++] = edge;
    return 0;
}

/* The runs of one grid column: state[j] is 0 (not covered), 1 (inner) or 2 (edge) for
 * grid row iy0 + j; `base` is the column's first cell id (ix * COLUMN). */
static int column_runs(Runs *r, const unsigned char *state, Py_ssize_t ny, int64_t base,
                       int64_t iy0) {
    Py_ssize_t j = 0;
    while (j < ny) {
        unsigned char s = state[j];
        Py_ssize_t k = j + 1;
        while (k < ny && state[k] == s)
            k++;
        if (s && runs_push(r, base + iy0 + j, base + iy0 + k - 1, s == 2) < 0)
            return -1;
        j = k;
    }
    return 0;
}

static PyObject *runs_bytes(Runs *r) {
    PyObject *out = PyBytes_FromStringAndSize((const char *)r->v, r->n * (Py_ssize_t)sizeof(int64_t));
    PyMem_Free(r->v);
    return out;
}

PyDoc_STRVAR(radius_cover_doc,
"radius_cover(lat, lng, cos_in, cos_near, ix0, ix1, iy0, iy1)\n"
"--\n\n"
"The cell cover of `search.engines.postgres.blocks.radius_cover` over grid columns ix0..ix1 and rows\n"
"iy0..iy1 (inclusive): a cell is inner when the unit vectors of its 4 corners have a\n"
"dot product with that of (lat, lng) (degrees) of at least `cos_in`; else an edge cell\n"
"when that of its point nearest to (lat, lng) in lng/lat (clamped) is at least\n"
"`cos_near`; else not covered. Returns the runs as bytes of native int64 triples\n"
"(first cell, last cell, edge 0/1), sorted by cell id (column by column).\n"
"ValueError when the grid is empty or larger than 2^26 cells.");

static PyObject *radius_cover(PyObject *self, PyObject *args) {
    double lat, lng, cos_in, cos_near;
    long long ix0, ix1, iy0, iy1;
    if (!PyArg_ParseTuple(args, "ddddLLLL", &lat, &lng, &cos_in, &cos_near, &ix0, &ix1, &iy0,
                          &iy1))
        return NULL;
    if (ix1 < ix0 || iy1 < iy0 || (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > (1LL << 26)) {
        PyErr_SetString(PyExc_ValueError, "the grid of a cover is empty or too large");
        return NULL;
    }
    Py_ssize_t nx = (Py_ssize_t)(ix1 - ix0 + 1), ny = (Py_ssize_t)(iy1 - iy0 + 1);
    double phi = lat * DEG, lam = lng * DEG;
    double px = cos(phi) * cos(lam), py = cos(phi) * sin(lam), pz = sin(phi);
    /* per corner row j (ny + 1): cos(y), sin(y) pz; per cell row: the same at the row's
     * latitude nearest to lat; then per column the corner dots of its two sides */
    Py_ssize_t words = 3 * (ny + 1) + 2 * ny;
    double *buf = PyMem_Malloc((size_t)words * sizeof(double));
    unsigned char *state = PyMem_Malloc((size_t)ny);
    unsigned char *left = PyMem_Malloc((size_t)(ny + 1)), *right = PyMem_Malloc((size_t)(ny + 1));
    Runs r = {NULL, 0, 0};
    PyObject *out = NULL;
    if (buf == NULL || state == NULL || left == NULL || right == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double *cy = buf, *sy = buf + (ny + 1), *ys = buf + 2 * (ny + 1);
    double *ncy = buf + 3 * (ny + 1), *nsy = ncy + ny;
    for (Py_ssize_t j = 0; j <= ny; j++) {
        ys[j] = (double)(iy0 + j) * CELL_DEG - 90.0;
        double ry = ys[j] * DEG;
        cy[j] = cos(ry);
        sy[j] = sin(ry) * pz;
    }
    for (Py_ssize_t j = 0; j < ny; j++) {
        double y = lat < ys[j] ? ys[j] : lat > ys[j + 1] ? ys[j + 1] : lat;
        ncy[j] = cos(y * DEG);
        nsy[j] = sin(y * DEG) * pz;
    }
    double x = (double)ix0 * CELL_DEG - 180.0, rx = x * DEG;
    double along = cos(rx) * px + sin(rx) * py;
    for (Py_ssize_t j = 0; j <= ny; j++)
        left[j] = cy[j] * along + sy[j] >= cos_in;
    for (Py_ssize_t i = 0; i < nx; i++) {
        double x1 = (double)(ix0 + i + 1) * CELL_DEG - 180.0, rx1 = x1 * DEG;
        double along1 = cos(rx1) * px + sin(rx1) * py;
        for (Py_ssize_t j = 0; j <= ny; j++)
            right[j] = cy[j] * along1 + sy[j] >= cos_in;
        double xn = lng < x ? x : lng > x1 ? x1 : lng, rxn = xn * DEG;
        double alongn = cos(rxn) * px + sin(rxn) * py;
        for (Py_ssize_t j = 0; j < ny; j++) {
            if (left[j] && left[j + 1] && right[j] && right[j + 1])
                state[j] = 1;
            else
                state[j] = ncy[j] * alongn + nsy[j] >= cos_near ? 2 : 0;
        }
        if (column_runs(&r, state, ny, (ix0 + i) * (int64_t)COLUMN, iy0) < 0)
            goto done;
        unsigned char *t = left;
        left = right;
        right = t;
        x = x1;
    }
    out = runs_bytes(&r);
    r.v = NULL;

done:
    PyMem_Free(r.v);
    PyMem_Free(right);
    PyMem_Free(left);
    PyMem_Free(state);
    PyMem_Free(buf);
    return out;
}

PyDoc_STRVAR(grid_runs_doc,
"grid_runs(state, nx, ny, ix0, iy0)\n"
"--\n\n"
"The runs of a cell grid: `state` holds nx * ny bytes, column by column (grid column\n"
"ix0 + i, row iy0 + j at i * ny + j), 0 not covered, 1 inner, 2 edge. Returns the runs\n"
"as `radius_cover` does. ValueError when `state` does not hold nx * ny bytes.");

static PyObject *grid_runs(PyObject *self, PyObject *args) {
    PyObject *state_o;
    Py_ssize_t nx, ny;
    long long ix0, iy0;
    if (!PyArg_ParseTuple(args, "OnnLL", &state_o, &nx, &ny, &ix0, &iy0))
        return NULL;
    Py_buffer st;
    if (PyObject_GetBuffer(state_o, &st, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL;
    Runs r = {NULL, 0, 0};
    if (nx < 0 || ny < 0 || st.len != nx * ny) {
        PyErr_SetString(PyExc_ValueError, "state does not hold nx * ny cells");
        goto done;
    }
    for (Py_ssize_t i = 0; i < nx; i++)
        if (column_runs(&r, (const unsigned char *)st.buf + i * ny, ny,
                        (ix0 + i) * (int64_t)COLUMN, iy0) < 0)
            goto done;
    out = runs_bytes(&r);
    r.v = NULL;

done:
    PyMem_Free(r.v);
    PyBuffer_Release(&st);
    return out;
}

/* ------------------------------------------------------------------ gathering blocks */

PyDoc_STRVAR(gather_doc,
"gather(copies, idx, lengths)\n"
"--\n\n"
"The concatenation of `copies[i]` (a list of bytes) for each i of `idx` (native int64),\n"
"in that order, as one bytes object; `lengths` (None, or a writable buffer of one native\n"
"int64 per index) receives each part's length in bytes. ValueError when an index is out\n"
"of range or its copy is not bytes (None: no copy held).");

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *copies, *idx_o, *lengths_o;
    if (!PyArg_ParseTuple(args, "O!OO", &PyList_Type, &copies, &idx_o, &lengths_o))
        return NULL;
    Py_buffer ib, lb;
    int got_lengths = 0;
    if (PyObject_GetBuffer(idx_o, &ib, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t m = ib.len / (Py_ssize_t)sizeof(int64_t), total = 0;
    Py_ssize_t n = PyList_GET_SIZE(copies);
    if (ib.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "idx is not a whole number of int64");
        goto done;
    }
    if ((got_lengths = optional_mask_buffer(lengths_o, &lb, m * (Py_ssize_t)sizeof(int64_t), 1,
                                            "lengths")) < 0)
        goto done;
    const int64_t *at = (const int64_t *)ib.buf;
    for (Py_ssize_t k = 0; k < m; k++) {
        if (at[k] < 0 || at[k] >= n) {
            PyErr_SetString(PyExc_ValueError, "a block index is out of range");
            goto done;
        }
        PyObject *v = PyList_GET_ITEM(copies, at[k]);
        if (!PyBytes_Check(v)) {
            PyErr_SetString(PyExc_ValueError, "a block has no copy");
            goto done;
        }
        total += PyBytes_GET_SIZE(v);
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    char *dst = PyBytes_AS_STRING(out);
    int64_t *len_out = got_lengths > 0 ? (int64_t *)lb.buf : NULL;
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *v = PyList_GET_ITEM(copies, at[k]);
        Py_ssize_t len = PyBytes_GET_SIZE(v);
        memcpy(dst, PyBytes_AS_STRING(v), (size_t)len);
        dst += len;
        if (len_out)
            len_out[k] = len;
    }

done:
    if (got_lengths > 0)
        PyBuffer_Release(&lb);
    PyBuffer_Release(&ib);
    return out;
}

/* ------------------------------------------------------------------ the page */

typedef struct {
    double key;
    uint64_t hi, lo;
    int64_t at;
} PageEntry;

/* a < b in (key, hi, lo) order */
static inline int page_less(const PageEntry *a, const PageEntry *b) {
    if (a->key != b->key)
        return a->key < b->key;
    if (a->hi != b->hi)
        return a->hi < b->hi;
    return a->lo < b->lo;
}

/* sift-down in a max-heap of k entries */
static void heap_down(PageEntry *h, Py_ssize_t k, Py_ssize_t i) {
    for (;;) {
        Py_ssize_t l = 2 * i + 1, big = i;
        if (l < k && page_less(&h[big], &h[l]))
            big = l;
        if (l + 1 < k && page_less(&h[big], &h[l + 1]))
            big = l + 1;
        if (big == i)
            return;
        PageEntry t = h[i];
        h[i] = h[big];
        h[big] = t;
        i = big;
    }
}

static int entry_cmp(const void *a, const void *b) {
    const PageEntry *x = a, *y = b;
    return page_less(x, y) ? -1 : page_less(y, x) ? 1 : 0;
}

PyDoc_STRVAR(page_doc,
"page(records, itemsize, hits, sort, rank, limit, after)\n"
"--\n\n"
"Indexes of the first `limit` records of `hits` (n bytes 0/1) in the order of the key\n"
"(primary, id) ascending, the id compared as two unsigned 64-bit halves (uuid byte\n"
"order): primary is -max(rank, 0) (rating_sort, hundredths) for `sort` 0, price for 1, and\n"
"-rank[i] for 2 (`rank`: n native float64, None otherwise). `after`: None, or the\n"
"keyset (primary, id_hi, id_lo): only the records after it. Returns a list of ints.\n"
"ValueError when a buffer has the wrong size, `sort` is unknown or `limit` < 1.");

static PyObject *page(PyObject *self, PyObject *args) {
    PyObject *records_o, *hits_o, *rank_o, *after_o;
    Py_ssize_t itemsize, limit;
    int sort;
    if (!PyArg_ParseTuple(args, "OnOiOnO", &records_o, &itemsize, &hits_o, &sort, &rank_o,
                          &limit, &after_o))
        return NULL;
    if (itemsize < BASE_SIZE || sort < 0 || sort > 2 || limit < 1) {
        PyErr_SetString(PyExc_ValueError, "bad record size, sort or limit");
        return NULL;
    }
    PageEntry after = {0, 0, 0, -1};
    int has_after = after_o != Py_None;
    if (has_after) {
        unsigned long long hi, lo;
        if (!PyArg_ParseTuple(after_o, "dKK", &after.key, &hi, &lo))
            return NULL;
        after.hi = hi;
        after.lo = lo;
    }
    Py_buffer rec, hits, rank;
    int got_hits = 0, got_rank = 0;
    PageEntry *heap = NULL;
    PyObject *result = NULL;
    Py_ssize_t n = records_buffer(records_o, &rec, itemsize);
    if (n < 0)
        return NULL;
    if ((got_hits = mask_buffer(hits_o, &hits, n, 0, "hits")) < 0)
        goto done;
    if (sort == 2) {
        if (rank_o == Py_None) {
            PyErr_SetString(PyExc_ValueError, "a relevance page needs its ranks");
            goto done;
        }
        if ((got_rank = optional_mask_buffer(rank_o, &rank, n * (Py_ssize_t)sizeof(double), 0,
                                             "rank")) < 0)
            goto done;
    }
    heap = PyMem_Malloc((size_t)limit * sizeof(PageEntry));
    if (heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *base = (const unsigned char *)rec.buf, *hit = hits.buf;
    const double *rk = got_rank > 0 ? (const double *)rank.buf : NULL;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!hit[i])
            continue;
        const unsigned char *r = base + i * itemsize;
        PageEntry e;
        if (sort == 0) {
            int rank = be16s(r + OFF_RANK);
            e.key = -(double)(rank > 0 ? rank : 0);
        } else if (sort == 1) {
            e.key = (double)be32s(r + OFF_PRICE);
        } else {
            e.key = -rk[i];
        }
        e.hi = be64(r);
        e.lo = be64(r + 8);
        e.at = i;
        if (has_after && !page_less(&after, &e))
            continue;
        if (k < limit) {
            heap[k++] = e;
            if (k == limit)
                for (Py_ssize_t j = limit / 2; j-- > 0;)
                    heap_down(heap, k, j);
        } else if (page_less(&e, &heap[0])) {
            heap[0] = e;
            heap_down(heap, k, 0);
        }
    }
    qsort(heap, (size_t)k, sizeof(PageEntry), entry_cmp);
    result = PyList_New(k);
    if (result == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *v = PyLong_FromSsize_t((Py_ssize_t)heap[j].at);
        if (v == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, j, v);
    }

done:
    PyMem_Free(heap);
    if (got_rank > 0)
        PyBuffer_Release(&rank);
    if (got_hits > 0)
        PyBuffer_Release(&hits);
    PyBuffer_Release(&rec);
    return result;
}

/* ------------------------------------------------------------------ ids */

PyDoc_STRVAR(hex_ids_doc,
"hex_ids(records, itemsize, idx)\n"
"--\n\n"
"The provider ids (the first 16 bytes) of the records at `idx` (a sequence of ints), in\n"
"that order, as 32-digit lowercase hex strings (what PostgreSQL reads as a uuid).\n"
"IndexError when an index is out of range.");

static PyObject *hex_ids(PyObject *self, PyObject *args) {
    PyObject *records_o, *idx_o;
    Py_ssize_t itemsize;
    if (!PyArg_ParseTuple(args, "OnO", &records_o, &itemsize, &idx_o))
        return NULL;
    if (itemsize < 16) {
        PyErr_SetString(PyExc_ValueError, "a record holds a 16-byte id");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(idx_o, "idx is a sequence of ints");
    if (seq == NULL)
        return NULL;
    Py_buffer rec;
    if (PyObject_GetBuffer(records_o, &rec, PyBUF_SIMPLE) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t n = rec.len / itemsize, m = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(m);
    if (out == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < m; k++) {
        Py_ssize_t i = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k), PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) {
            Py_CLEAR(out);
            goto done;
        }
        if (i < 0 || i >= n) {
            PyErr_SetString(PyExc_IndexError, "a record index is out of range");
            Py_CLEAR(out);
            goto done;
        }
        PyObject *str = PyUnicode_New(32, 127);
        if (str == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        Py_UCS1 *dst = PyUnicode_1BYTE_DATA(str);
        const unsigned char *id = (const unsigned char *)rec.buf + i * itemsize;
        for (int b = 0; b < 16; b++) {
            dst[2 * b] = (Py_UCS1)digits[id[b] >> 4];
            dst[2 * b + 1] = (Py_UCS1)digits[id[b] & 15];
        }
        PyList_SET_ITEM(out, k, str);
    }

done:
    PyBuffer_Release(&rec);
    Py_DECREF(seq);
    return out;
}

/* ------------------------------------------------------------------ text matches */

/* Grows an array of `size`-byte items. */
typedef struct {
    char *v;
    Py_ssize_t n, cap, size;
} Grow;

static int grow_reserve(Grow *g, Py_ssize_t more) {
    if (g->n + more <= g->cap)
        return 0;
    Py_ssize_t cap = g->cap ? g->cap : 1024;
    while (cap < g->n + more)
        cap *= 2;
    char *v = PyMem_Realloc(g->v, (size_t)(cap * g->size));
    if (v == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    g->v = v;
    g->cap = cap;
    return 0;
}

PyDoc_STRVAR(text_gather_doc,
"text_gather(group, cells, versions, starts, ranked)\n"
"--\n\n"
"The loop of `search.engines.postgres.text_cache.TextMatchCache.gather`: for each block b (cell `cells[b]`\n"
"at version `versions[b]`, first record at `starts[b]`; native int64 buffers), the entry\n"
"`group[cell]` = (version, positions int32 array, ranks float32 array or None) is used\n"
"when its version is the block's. Returns (positions of the matches among the records\n"
"as bytes of native int64, their ranks as bytes of native float32 when `ranked` else\n"
"None, list of the blocks b without a valid entry). ValueError when the buffers differ\n"
"in length or an entry is malformed.");

static PyObject *text_gather(PyObject *self, PyObject *args) {
    PyObject *group, *cells_o, *versions_o, *starts_o;
    int ranked;
    if (!PyArg_ParseTuple(args, "O!OOOp", &PyDict_Type, &group, &cells_o, &versions_o,
                          &starts_o, &ranked))
        return NULL;
    Py_buffer cb, vb, sb;
    if (PyObject_GetBuffer(cells_o, &cb, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(versions_o, &vb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&cb);
        return NULL;
    }
    if (PyObject_GetBuffer(starts_o, &sb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&vb);
        PyBuffer_Release(&cb);
        return NULL;
    }
    PyObject *result = NULL, *missing = NULL;
    Grow pos = {NULL, 0, 0, sizeof(int64_t)}, rk = {NULL, 0, 0, sizeof(float)};
    Py_ssize_t m = cb.len / (Py_ssize_t)sizeof(int64_t);
    if (cb.len % (Py_ssize_t)sizeof(int64_t) || vb.len != cb.len || sb.len != cb.len) {
        PyErr_SetString(PyExc_ValueError, "cells, versions and starts differ in length");
        goto done;
    }
    missing = PyList_New(0);
    if (missing == NULL)
        goto done;
    const int64_t *cells = cb.buf, *versions = vb.buf, *starts = sb.buf;
    for (Py_ssize_t b = 0; b < m; b++) {
        PyObject *key = PyLong_FromLongLong(cells[b]);
        if (key == NULL)
            goto done;
        PyObject *e = PyDict_GetItemWithError(group, key); /* borrowed */
        Py_DECREF(key);
        if (e == NULL && PyErr_Occurred())
            goto done;
        long long version = -1;
        if (e != NULL) {
            if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 3) {
                PyErr_SetString(PyExc_ValueError, "a text match entry is not a 3-tuple");
                goto done;
            }
            version = PyLong_AsLongLong(PyTuple_GET_ITEM(e, 0));
            if (version == -1 && PyErr_Occurred())
                goto done;
        }
        if (e == NULL || version != versions[b]) {
            if (append_index(missing, b) < 0)
                goto done;
            continue;
        }
        Py_buffer ib, rb;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(e, 1), &ib, PyBUF_SIMPLE) < 0)
            goto done;
        Py_ssize_t k = ib.len / (Py_ssize_t)sizeof(int32_t);
        int bad = ib.len % (Py_ssize_t)sizeof(int32_t) != 0;
        int got_rb = 0;
        if (!bad && ranked) {
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(e, 2), &rb, PyBUF_SIMPLE) < 0) {
                PyBuffer_Release(&ib);
                goto done;
            }
            got_rb = 1;
            bad = rb.len != k * (Py_ssize_t)sizeof(float);
        }
        if (!bad && (grow_reserve(&pos, k) < 0 || (ranked && grow_reserve(&rk, k) < 0))) {
            if (got_rb)
                PyBuffer_Release(&rb);
            PyBuffer_Release(&ib);
            goto done;
        }
        if (!bad) {
            const int32_t *at = ib.buf;
            int64_t *dst = (int64_t *)pos.v + pos.n;
            for (Py_ssize_t j = 0; j < k; j++)
                dst[j] = starts[b] + at[j];
            pos.n += k;
            if (ranked) {
                memcpy((float *)rk.v + rk.n, rb.buf, (size_t)k * sizeof(float));
                rk.n += k;
            }
        }
        if (got_rb)
            PyBuffer_Release(&rb);
        PyBuffer_Release(&ib);
        if (bad) {
            PyErr_SetString(PyExc_ValueError, "a text match entry's arrays do not match");
            goto done;
        }
    }
    PyObject *pos_b = PyBytes_FromStringAndSize(pos.v ? pos.v : "", pos.n * pos.size);
    PyObject *rk_b = ranked ? PyBytes_FromStringAndSize(rk.v ? rk.v : "", rk.n * rk.size)
                            : Py_NewRef(Py_None);
    if (pos_b != NULL && rk_b != NULL)
        result = PyTuple_Pack(3, pos_b, rk_b, missing);
    Py_XDECREF(pos_b);
    Py_XDECREF(rk_b);

done:
    Py_XDECREF(missing);
    PyMem_Free(pos.v);
    PyMem_Free(rk.v);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&cb);
    return result;
}

/* ------------------------------------------------------------------ map clusters */

typedef struct {
    int64_t gx, gy;
    long long count;
    double sum_lat, sum_lng, min_lat, min_lng, max_lat, max_lng;
    int used;
} Cluster;

static uint64_t cluster_hash(int64_t gx, int64_t gy) {
    uint64_t h = (uint64_t)gx * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)gy + 0x632BE59BD9B4E019ULL);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 32);
}

/* the slot of (gx, gy) in a table of `cap` slots (a power of two), free or its own */
static Py_ssize_t cluster_slot(Cluster *t, Py_ssize_t cap, int64_t gx, int64_t gy) {
    Py_ssize_t i = (Py_ssize_t)(cluster_hash(gx, gy) & (uint64_t)(cap - 1));
    while (t[i].used && (t[i].gx != gx || t[i].gy != gy))
        i = (i + 1) & (cap - 1);
    return i;
}

PyDoc_STRVAR(clusters_doc,
"clusters(records, itemsize, hits, cell)\n"
"--\n\n"
"Map clusters of the `hits` (n bytes 0/1) tutor records on the grid of `cell` degrees:\n"
"per non-empty grid cell (gx, gy) = (floor(lng / cell), floor(lat / cell)) one tuple\n"
"(count, avg lat, avg lng, min lat, min lng, max lat, max lng, gx, gy), sums taken in\n"
"record order, in the order the grid cells are first met. ValueError when a buffer has\n"
"the wrong size or `cell` is not positive.");

static PyObject *clusters(PyObject *self, PyObject *args) {
    PyObject *records_o, *hits_o;
    Py_ssize_t itemsize;
    double cell;
    if (!PyArg_ParseTuple(args, "OnOd", &records_o, &itemsize, &hits_o, &cell))
        return NULL;
    if (itemsize < TUTOR_SIZE || !(cell > 0)) {
        PyErr_SetString(PyExc_ValueError, "tutor records and a positive cell are needed");
        return NULL;
    }
    Py_buffer rec, hits;
    Py_ssize_t n = records_buffer(records_o, &rec, itemsize);
    if (n < 0)
        return NULL;
    PyObject *result = NULL;
    int got_hits = 0;
    Cluster *t = NULL;
    Py_ssize_t *order = NULL;
    if ((got_hits = mask_buffer(hits_o, &hits, n, 0, "hits")) < 0)
        goto done;
    Py_ssize_t cap = 1024, used = 0;
    t = PyMem_Calloc((size_t)cap, sizeof(Cluster));
    order = PyMem_Malloc((size_t)cap * sizeof(Py_ssize_t));
    if (t == NULL || order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *base = rec.buf, *hit = hits.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!hit[i])
            continue;
        const unsigned char *r = base + i * itemsize;
        double lat = be_double(r + OFF_LAT), lng = be_double(r + OFF_LNG);
        int64_t gx = (int64_t)floor(lng / cell), gy = (int64_t)floor(lat / cell);
        Py_ssize_t s = cluster_slot(t, cap, gx, gy);
        if (!t[s].used) {
            if (2 * (used + 1) > cap) { /* grow: rehash into twice the slots */
                Py_ssize_t cap2 = 2 * cap;
                Cluster *t2 = PyMem_Calloc((size_t)cap2, sizeof(Cluster));
                Py_ssize_t *order2 = PyMem_Realloc(order, (size_t)cap2 * sizeof(Py_ssize_t));
                if (t2 == NULL || order2 == NULL) {
                    PyMem_Free(t2);
                    if (order2 != NULL)
                        order = order2;
                    PyErr_NoMemory();
                    goto done;
                }
                order = order2;
                for (Py_ssize_t k = 0; k < used; k++) {
                    Py_ssize_t s2 = cluster_slot(t2, cap2, t[order[k]].gx, t[order[k]].gy);
                    t2[s2] = t[order[k]];
                    order[k] = s2;
                }
                PyMem_Free(t);
                t = t2;
                cap = cap2;
                s = cluster_slot(t, cap, gx, gy);
            }
            t[s].used = 1;
            t[s].gx = gx;
            t[s].gy = gy;
            t[s].min_lat = t[s].max_lat = lat;
            t[s].min_lng = t[s].max_lng = lng;
            order[used++] = s;
        }
        Cluster *c = &t[s];
        c->count++;
        c->sum_lat += lat;
        c->sum_lng += lng;
        if (lat < c->min_lat)
            c->min_lat = lat;
        if (lat > c->max_lat)
            c->max_lat = lat;
        if (lng < c->min_lng)
            c->min_lng = lng;
        if (lng > c->max_lng)
            c->max_lng = lng;
    }
    result = PyList_New(used);
    if (result == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < used; k++) {
        Cluster *c = &t[order[k]];
        PyObject *item = Py_BuildValue("(LddddddLL)", c->count, c->sum_lat / (double)c->count,
                                       c->sum_lng / (double)c->count, c->min_lat, c->min_lng,
                                       c->max_lat, c->max_lng, (long long)c->gx,
                                       (long long)c->gy);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, k, item);
    }

done:
    PyMem_Free(order);
    PyMem_Free(t);
    if (got_hits > 0)
        PyBuffer_Release(&hits);
    PyBuffer_Release(&rec);
    return result;
}

/* ------------------------------------------------------------------ the distance page */

/* sift-down in a max-heap of k doubles */
static void dheap_down(double *h, Py_ssize_t k, Py_ssize_t i) {
    for (;;) {
        Py_ssize_t l = 2 * i + 1, big = i;
        if (l < k && h[l] > h[big])
            big = l;
        if (l + 1 < k && h[l + 1] > h[big])
            big = l + 1;
        if (big == i)
            return;
        double t = h[i];
        h[i] = h[big];
        h[big] = t;
        i = big;
    }
}

PyDoc_STRVAR(nearest_doc,
"nearest(records, itemsize, hits, lat, lng, limit, after)\n"
"--\n\n"
"The candidates of `search.engines.postgres.blocks.Blocks.nearest`, as record indexes in record order:\n"
"over the `hits` (n bytes 0/1) tutor records, with d the sphere distance to (lat, lng)\n"
"(metres: acos of the unit vectors' dot product clipped to [-1, 1], times the PostGIS\n"
"sphere's radius): with `after` (metres, or None) the records with\n"
"d < after / 1.006 - 1 are dropped and those with d <= after * 1.006 + 1 are uncertain;\n"
"with D the `limit`-th smallest d of the others (when there are more than `limit`),\n"
"the candidates are the uncertain records and the others with\n"
"d <= (D * 1.006 + 1) * 1.006 + 1. ValueError when a buffer has the wrong size or\n"
"`limit` < 1.");

static PyObject *nearest(PyObject *self, PyObject *args) {
    PyObject *records_o, *hits_o, *after_o;
    Py_ssize_t itemsize, limit;
    double lat, lng;
    if (!PyArg_ParseTuple(args, "OnOddnO", &records_o, &itemsize, &hits_o, &lat, &lng, &limit,
                          &after_o))
        return NULL;
    if (itemsize < TUTOR_SIZE || limit < 1) {
        PyErr_SetString(PyExc_ValueError, "tutor records and a positive limit are needed");
        return NULL;
    }
    int has_after = after_o != Py_None;
    double after = 0;
    if (has_after) {
        after = PyFloat_AsDouble(after_o);
        if (after == -1.0 && PyErr_Occurred())
            return NULL;
    }
    Py_buffer rec, hits;
    Py_ssize_t n = records_buffer(records_o, &rec, itemsize);
    if (n < 0)
        return NULL;
    PyObject *result = NULL;
    int got_hits = 0;
    int64_t *at = NULL;
    double *dist = NULL, *heap = NULL;
    unsigned char *certain = NULL;
    if ((got_hits = mask_buffer(hits_o, &hits, n, 0, "hits")) < 0)
        goto done;
    const unsigned char *base = rec.buf, *hit = hits.buf;
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        m += hit[i] != 0;
    at = PyMem_Malloc((size_t)(m ? m : 1) * sizeof(int64_t));
    dist = PyMem_Malloc((size_t)(m ? m : 1) * sizeof(double));
    certain = PyMem_Malloc((size_t)(m ? m : 1));
    heap = PyMem_Malloc((size_t)limit * sizeof(double));
    if (at == NULL || dist == NULL || certain == NULL || heap == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double phi = lat * DEG, lam = lng * DEG;
    double px = cos(phi) * cos(lam), py = cos(phi) * sin(lam), pz = sin(phi);
    double lo = after / 1.006 - 1.0, hi = after * 1.006 + 1.0;
    Py_ssize_t k = 0, nheap = 0, ncert = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!hit[i])
            continue;
        const unsigned char *r = base + i * itemsize;
        double rphi = be_double(r + OFF_LAT) * DEG, rlam = be_double(r + OFF_LNG) * DEG;
        double c = cos(rphi);
        double dot = c * cos(rlam) * px + c * sin(rlam) * py + sin(rphi) * pz;
        double d = acos(dot < -1.0 ? -1.0 : dot > 1.0 ? 1.0 : dot) * EARTH_R;
        if (has_after && d < lo)
            continue;
        int sure = !has_after || d > hi;
        at[k] = i;
        dist[k] = d;
        certain[k] = (unsigned char)sure;
        k++;
        if (!sure)
            continue;
        ncert++;
        if (nheap < limit) {
            heap[nheap++] = d;
            if (nheap == limit)
                for (Py_ssize_t j = limit / 2; j-- > 0;)
                    dheap_down(heap, nheap, j);
        } else if (d < heap[0]) {
            heap[0] = d;
            dheap_down(heap, nheap, 0);
        }
    }
    double bound = INFINITY;
    if (ncert > limit)
        bound = (heap[0] * 1.006 + 1.0) * 1.006 + 1.0;
    result = PyList_New(0);
    if (result == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < k; j++) {
        if (certain[j] && !(dist[j] <= bound))
            continue;
        if (append_index(result, (Py_ssize_t)at[j]) < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }

done:
    PyMem_Free(heap);
    PyMem_Free(certain);
    PyMem_Free(dist);
    PyMem_Free(at);
    if (got_hits > 0)
        PyBuffer_Release(&hits);
    PyBuffer_Release(&rec);
    return result;
}

/* ------------------------------------------------------------------ the page's items */

/* The item of record j of a block of n records whose items are `part` (one big-endian
 * int4 per record, the end of its item in bytes after those ints, then the items; the
 * last record's item ends where the items end): *at and *len set, 0; -1 with ValueError
 * when they do not match. */
static int item_of(PyObject *part, Py_ssize_t n, Py_ssize_t j, const char **at,
                   Py_ssize_t *len) {
    const char *p = PyBytes_AS_STRING(part);
    const unsigned char *ends = (const unsigned char *)p;
    Py_ssize_t body = PyBytes_GET_SIZE(part) - 4 * n;
    if (n >= 1 && j >= 0 && j < n && body >= 0 && be32s(ends + 4 * (n - 1)) == body) {
        Py_ssize_t start = j ? be32s(ends + 4 * (j - 1)) : 0, end = be32s(ends + 4 * j);
        if (start >= 0 && start <= end && end <= body) {
            *at = p + 4 * n + start;
            *len = end - start;
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError, "a block's items do not match its records");
    return -1;
}

PyDoc_STRVAR(items_json_doc,
"items_json(parts, ns, js, tails)\n"
"--\n\n"
"The JSON array of the list items of some records, item k being record js[k] of a\n"
"block of ns[k] records whose items are parts[k] (bytes, as\n"
"`search.engines.postgres.blocks.block_rows_sql` packs them: one big-endian int4 per record, the end of\n"
"its item in bytes after those ints, then the items), followed by tails[k] (bytes: the\n"
"item is stored open). Four lists of one length. ValueError when a block's items do\n"
"not match its record count or js[k] is not one of its records.");

static PyObject *items_json(PyObject *self, PyObject *args) {
    PyObject *parts, *ns, *js, *tails;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyList_Type, &parts, &PyList_Type, &ns,
                          &PyList_Type, &js, &PyList_Type, &tails))
        return NULL;
    Py_ssize_t m = PyList_GET_SIZE(parts);
    if (PyList_GET_SIZE(ns) != m || PyList_GET_SIZE(js) != m || PyList_GET_SIZE(tails) != m) {
        PyErr_SetString(PyExc_ValueError, "parts, ns, js and tails differ in length");
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t *item_at = PyMem_Malloc((size_t)(m ? m : 1) * 2 * sizeof(Py_ssize_t));
    if (item_at == NULL)
        return PyErr_NoMemory();
    Py_ssize_t total = 2 + (m ? m - 1 : 0);
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *part = PyList_GET_ITEM(parts, k), *tail = PyList_GET_ITEM(tails, k);
        if (!PyBytes_Check(part) || !PyBytes_Check(tail)) {
            PyErr_SetString(PyExc_TypeError, "parts and tails are bytes");
            goto done;
        }
        Py_ssize_t n = PyLong_AsSsize_t(PyList_GET_ITEM(ns, k));
        Py_ssize_t j = PyLong_AsSsize_t(PyList_GET_ITEM(js, k));
        if ((n == -1 || j == -1) && PyErr_Occurred())
            goto done;
        const char *at;
        if (item_of(part, n, j, &at, &item_at[2 * k + 1]) < 0)
            goto done;
        item_at[2 * k] = at - PyBytes_AS_STRING(part);
        total += item_at[2 * k + 1] + PyBytes_GET_SIZE(tail);
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    char *dst = PyBytes_AS_STRING(out);
    *dst++ = '[';
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *part = PyList_GET_ITEM(parts, k), *tail = PyList_GET_ITEM(tails, k);
        if (k)
            *dst++ = ',';
        memcpy(dst, PyBytes_AS_STRING(part) + item_at[2 * k], (size_t)item_at[2 * k + 1]);
        dst += item_at[2 * k + 1];
        memcpy(dst, PyBytes_AS_STRING(tail), (size_t)PyBytes_GET_SIZE(tail));
        dst += PyBytes_GET_SIZE(tail);
    }
    *dst = ']';

done:
    PyMem_Free(item_at);
    return out;
}

/* The bytes of the item [*from, end) between the end of the first `open` marker and the
 * start of the first `close` marker after it: *at and *n set, *from moved past them, 0;
 * -1 when either is missing. A marker begins with `,"` or `{"`: our items write every
 * key that way, and inside a JSON string a quote is escaped, so a marker never matches
 * inside a value. Markers are looked for in the items' key order, each item read once. */
static int between(const char **from, const char *end, const char *open, const char *close,
                   const char **at, Py_ssize_t *n) {
    size_t ol = strlen(open), cl = strlen(close);
    const char *a = memmem(*from, (size_t)(end - *from), open, ol);
    if (a == NULL)
        return -1;
    a += ol;
    const char *b = memmem(a, (size_t)(end - a), close, cl);
    if (b == NULL)
        return -1;
    *at = a;
    *n = b - a;
    *from = b;
    return 0;
}

PyDoc_STRVAR(points_json_doc,
"points_json(parts, ns, js)\n"
"--\n\n"
"The JSON array of the map points of some tutors, point k from the list item of record\n"
"js[k] of a block of ns[k] records whose items are parts[k] (as `items_json` reads\n"
"them): {\"id\", \"lat\", \"lng\", \"display_name\", \"price\", \"rating\"} (the\n"
"response's `MapPoint`, in its key order), each value the item's own bytes (the lat and\n"
"lng of its `location`). ValueError when a block's items do not match its record count,\n"
"js[k] is not one of its records, or an item is not a tutor's with a location.");

static PyObject *points_json(PyObject *self, PyObject *args) {
    PyObject *parts, *ns, *js;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &parts, &PyList_Type, &ns,
                          &PyList_Type, &js))
        return NULL;
    Py_ssize_t m = PyList_GET_SIZE(parts);
    if (PyList_GET_SIZE(ns) != m || PyList_GET_SIZE(js) != m) {
        PyErr_SetString(PyExc_ValueError, "parts, ns and js differ in length");
        return NULL;
    }
    PyObject *out = NULL;
    const char **item = PyMem_Malloc((size_t)(m ? m : 1) * sizeof(char *));
    Py_ssize_t *item_len = PyMem_Malloc((size_t)(m ? m : 1) * sizeof(Py_ssize_t));
    if (item == NULL || item_len == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* a point is made of pieces of its item with the same delimiters: never longer */
    Py_ssize_t cap = 2 + m;
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *part = PyList_GET_ITEM(parts, k);
        if (!PyBytes_Check(part)) {
            PyErr_SetString(PyExc_TypeError, "parts are bytes");
            goto done;
        }
        Py_ssize_t n = PyLong_AsSsize_t(PyList_GET_ITEM(ns, k));
        Py_ssize_t j = PyLong_AsSsize_t(PyList_GET_ITEM(js, k));
        if ((n == -1 || j == -1) && PyErr_Occurred())
            goto done;
        if (item_of(part, n, j, &item[k], &item_len[k]) < 0)
            goto done;
        cap += item_len[k];
    }
    out = PyBytes_FromStringAndSize(NULL, cap);
    if (out == NULL)
        goto done;
    char *dst = PyBytes_AS_STRING(out);
    *dst++ = '[';
    for (Py_ssize_t k = 0; k < m; k++) {
        const char *id, *name, *price, *rating, *where;
        Py_ssize_t id_n, name_n, price_n, rating_n, where_n;
        const char *at = item[k], *stop = item[k] + item_len[k];
        if (between(&at, stop, "{\"id\":", ",\"display_name\":", &id, &id_n) < 0 ||
            between(&at, stop, ",\"display_name\":", ",\"headline\":", &name, &name_n) < 0 ||
            between(&at, stop, ",\"price\":", ",\"rating\":", &price, &price_n) < 0 ||
            between(&at, stop, ",\"rating\":", ",\"online\":", &rating, &rating_n) < 0 ||
            between(&at, stop, ",\"location\":{", "}", &where, &where_n) < 0) {
            PyErr_SetString(PyExc_ValueError, "an item is not a tutor's with a location");
            Py_CLEAR(out);
            goto done;
        }
        if (k)
            *dst++ = ',';
#define PUT(s, n)                                                                           \
    do {                                                                                    \
        memcpy(dst, (s), (size_t)(n));                                                      \
        dst += (n);                                                                         \
    } while (0)
        PUT("{\"id\":", 6);
        PUT(id, id_n);
        *dst++ = ',';
        PUT(where, where_n);
        PUT(",\"display_name\":", 16);
        PUT(name, name_n);
        PUT(",\"price\":", 9);
        PUT(price, price_n);
        PUT(",\"rating\":", 10);
        PUT(rating, rating_n);
        *dst++ = '}';
#undef PUT
    }
    *dst++ = ']';
    if (_PyBytes_Resize(&out, dst - PyBytes_AS_STRING(out)) < 0)
        out = NULL; /* freed by _PyBytes_Resize */

done:
    PyMem_Free(item);
    PyMem_Free(item_len);
    return out;
}

static PyMethodDef methods[] = {
    {"facet_pass", facet_pass, METH_VARARGS, facet_pass_doc},
    {"edge_test", edge_test, METH_VARARGS, edge_test_doc},
    {"vincenty", vincenty_py, METH_VARARGS, vincenty_doc},
    {"radius_cover", radius_cover, METH_VARARGS, radius_cover_doc},
    {"grid_runs", grid_runs, METH_VARARGS, grid_runs_doc},
    {"gather", gather, METH_VARARGS, gather_doc},
    {"page", page, METH_VARARGS, page_doc},
    {"hex_ids", hex_ids, METH_VARARGS, hex_ids_doc},
    {"text_gather", text_gather, METH_VARARGS, text_gather_doc},
    {"clusters", clusters, METH_VARARGS, clusters_doc},
    {"nearest", nearest, METH_VARARGS, nearest_doc},
    {"items_json", items_json, METH_VARARGS, items_json_doc},
    {"points_json", points_json, METH_VARARGS, points_json_doc},
    {"st_distance", st_distance, METH_VARARGS, st_distance_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "search.engines.postgres._kernels",
    "The facet pass and the other per-record loops over packed facet records (_kernels.c).", -1,
    methods,
};

/* The record layout the kernels were compiled with (`record_layout.h`), for the test that
 * compares it with the numpy dtype and the SQL pack expression. */
static int add_layout(PyObject *m) {
    PyObject *d = Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}", "id",
        (Py_ssize_t)OFF_ID, "cat", (Py_ssize_t)OFF_CAT, "lang", (Py_ssize_t)OFF_LANG, "price",
        (Py_ssize_t)OFF_PRICE, "rating", (Py_ssize_t)OFF_RATING, "rank", (Py_ssize_t)OFF_RANK, "flags", (Py_ssize_t)OFF_FLAGS,
        "currency", (Py_ssize_t)OFF_CURRENCY, "lat", (Py_ssize_t)OFF_LAT, "lng",
        (Py_ssize_t)OFF_LNG, "BASE_SIZE", (Py_ssize_t)BASE_SIZE, "TUTOR_SIZE",
        (Py_ssize_t)TUTOR_SIZE, "F_ONLINE", (Py_ssize_t)F_ONLINE, "F_IN_PERSON",
        (Py_ssize_t)F_IN_PERSON, "F_OTHERS", (Py_ssize_t)F_OTHERS, "F_MENTOR",
        (Py_ssize_t)F_MENTOR);
    if (d == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(m, "RECORD_LAYOUT", d);
    Py_DECREF(d);
    return rc;
}

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (add_layout(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
