/* The fast lane of the decision core (see fastlane.py for the contract).
 *
 * Keep-alive HTTP flows whose stream the Python core left idle (every byte so far
 * belongs to a request it inspected and accepted) are "admitted" here with the
 * sequence number of their next client byte. A later client->server segment of
 * such a flow that is in order and carries exactly one request of a strict,
 * simple shape that provably matches no intel is accepted here, in C, without
 * the Python parser. Anything else hands the flow back: its Python stream is
 * moved to the lane's sequence number and the Python core decides the packet,
 * exactly as if the lane had never held the flow.
 *
 * The screen is conservative on purpose: whenever the Python detector could
 * find something (an IOA path, a watched argument that is not a plain number,
 * a framing header, a byte that needs decoding), the packet goes to Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define GRAM_BITS 16
#define GRAM_BYTES ((1u << GRAM_BITS) / 8u)
#define MAX_TARGET 4096
#define MAX_HEADERS 100
#define MAX_PARAMS 128
#define MAX_SEGMENTS 64
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
/* Holes an entry remembers at most; Lane(max_gaps=) sets how many (engine.py's
 * MAX_OPEN_GAPS: past it the oldest is given up, in C as in Python). */
#define LANE_GAPS 64

typedef struct {
    char *text; /* lowercase */
    Py_ssize_t len;
} Text;

enum { SEG_LITERAL = 0, SEG_CAPTURE = 1, SEG_WATCHED = 2 };

typedef struct {
    Py_ssize_t count;
    Text *segments;
    int *kinds;
} Route;

typedef struct {
    int enabled;
    uint8_t grams[GRAM_BYTES]; /* 4-byte tails of the IOA path keys */
    Py_ssize_t n_short;
    Text *short_keys; /* IOA path keys shorter than 4 bytes: searched whole */
    Py_ssize_t n_names;
    Text *names; /* watched argument names */
    Py_ssize_t n_routes;
    Route *routes; /* templates with a watched capture */
} Screen;

typedef struct {
    PyObject_HEAD
    uint32_t next_seq;
    PyObject *flow;     /* agent.core.flows.Flow */
    PyObject *decision; /* the flow's plain-accept Decision */
    PyObject *active;   /* the flow table's OrderedDict of active flows */
    PyObject *lookup;   /* this flow's key in it */
    PyObject *state;    /* the core's per-flow state: add_gap(start, end) */
    int n_gaps;         /* holes skipped since admission, [start, end) */
    uint32_t gaps[LANE_GAPS][2];
    /* Body mode: the flow is in the body of an opaque upload; its bytes are kept aside
     * (at most `budget`, under the inspection depth) for Python's catch_up. */
    int body_mode;
    Py_ssize_t body_left, budget;
    char *body;
    Py_ssize_t body_len, body_cap;
    /* Holes in the body (segments fail-open let past): nothing reads such a body, so
     * only where it ends matters; Python is told where each hole was. */
    int n_body_holes;
    struct {
        Py_ssize_t offset; /* in `body`: the kept bytes before the hole */
        Py_ssize_t size;
        uint32_t seq_after;
    } body_holes[LANE_GAPS];
} Entry;

typedef struct {
    PyObject_HEAD
    Screen screen;
    Py_ssize_t depth;
    int max_gaps;
    PyObject *catch_up; /* catch_up(flow, state, body): body bytes kept aside, to Python */
    PyObject *entries;  /* dict: packet key bytes -> Entry */
    unsigned long long hits;
    unsigned long long handoffs;
    unsigned long long admitted;
    /* why flows were handed back */
    unsigned long long back_order, back_request, back_table;
    unsigned long long holes; /* requests accepted after a hole */
    unsigned long long body_hits; /* body segments kept aside */
} Lane;

static int give_body(Lane *self, Entry *entry);

static PyTypeObject EntryType;
static PyObject *str_move_to_end, *str_last_seen, *str_stream, *str_base, *str_add_gap;

/* ------------------------------------------------------------------ helpers */

static inline uint32_t gram_hash(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                 ((uint32_t)p[3] << 24);
    return (v * 2654435761u) >> (32 - GRAM_BITS);
}

static inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int contains(const unsigned char *hay, Py_ssize_t n, const char *needle, Py_ssize_t m) {
    if (m == 0) return 1;
    if (m > n) return 0;
    return memmem(hay, (size_t)n, needle, (size_t)m) != NULL;
}

static int contains_any_name(const Screen *s, const unsigned char *hay, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < s->n_names; k++)
        if (contains(hay, n, s->names[k].text, s->names[k].len)) return 1;
    return 0;
}

static int all_digits(const unsigned char *p, Py_ssize_t n) {
    if (n <= 0) return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9') return 0;
    return 1;
}

/* Path bytes that need no decoding or normalization (normalize.py's _PATH_WORK
 * and everything llhttp or a backend could read differently stay out). */
static uint8_t PATH_OK[256], QUERY_OK[256], NAME_OK[256];

static void init_tables(void) {
    const char *common = "-._~/!$'()*,=:@";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        PATH_OK[c] = QUERY_OK[c] = (uint8_t)alnum;
        NAME_OK[c] = (uint8_t)(alnum || c == '-');
    }
    for (const char *p = common; *p; p++) PATH_OK[(unsigned char)*p] = QUERY_OK[(unsigned char)*p] = 1;
    PATH_OK['+'] = 1; /* a path is not form-decoded: '+' stays '+' */
    PATH_OK['&'] = 1;
    QUERY_OK['&'] = 1; /* the pair separator */
}

static int name_is(const unsigned char *p, Py_ssize_t n, const char *lit) {
    Py_ssize_t m = (Py_ssize_t)strlen(lit);
    if (n != m) return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (lower(p[i]) != (unsigned char)lit[i]) return 0;
    return 1;
}

/* ------------------------------------------------------------------ the screen */

/* Route templates with a watched capture (routes.py semantics: literal segments
 * compare case-insensitively, a capture takes one segment, the last capture of a
 * template ending in it takes the rest of a longer path). 1 = clean, 0 = defer. */
static int routes_clean(const Screen *s, const unsigned char *path, Py_ssize_t n) {
    const unsigned char *seg[MAX_SEGMENTS];
    Py_ssize_t len[MAX_SEGMENTS];
    Py_ssize_t count = 0, i = 0;
    if (s->n_routes == 0) return 1;
    while (i < n) {
        while (i < n && path[i] == '/') i++;
        if (i >= n) break;
        Py_ssize_t start = i;
        while (i < n && path[i] != '/') i++;
        if (count == MAX_SEGMENTS) return 0;
        seg[count] = path + start;
        len[count] = i - start;
        count++;
    }
    for (Py_ssize_t r = 0; r < s->n_routes; r++) {
        const Route *route = &s->routes[r];
        Py_ssize_t m = route->count;
        int tail = 0;
        if (m == count) {
            tail = 0;
        } else if (m >= 1 && count > m && route->kinds[m - 1] != SEG_LITERAL) {
            tail = 1; /* the last capture takes the rest: a value with '/' */
        } else {
            continue;
        }
        int matched = 1;
        for (Py_ssize_t k = 0; k < m && matched; k++) {
            if (route->kinds[k] != SEG_LITERAL) continue; /* segments are never empty */
            if (len[k] != route->segments[k].len) {
                matched = 0;
                break;
            }
            for (Py_ssize_t j = 0; j < len[k]; j++)
                if (lower(seg[k][j]) != (unsigned char)route->segments[k].text[j]) {
                    matched = 0;
                    break;
                }
        }
        if (!matched) continue;
        for (Py_ssize_t k = 0; k < m; k++) {
            if (route->kinds[k] != SEG_WATCHED) continue;
            if (tail && k == m - 1) return 0;
            if (!all_digits(seg[k], len[k])) return 0;
        }
    }
    return 1;
}

/* Query pairs: a watched name must be exactly that name with a plain number. */
static int query_clean(const Screen *s, const unsigned char *q, Py_ssize_t n, int *params) {
    Py_ssize_t i = 0;
    unsigned char name[MAX_TARGET];
    while (i <= n) {
        Py_ssize_t start = i;
        while (i < n && q[i] != '&') i++;
        Py_ssize_t end = i, eq = start;
        while (eq < end && q[eq] != '=') eq++;
        if (end > start) {
            if (++*params > MAX_PARAMS) return 0;
            Py_ssize_t name_len = eq - start;
            for (Py_ssize_t j = 0; j < name_len; j++) name[j] = lower(q[start + j]);
            if (contains_any_name(s, name, name_len)) {
                int exact = 0;
                for (Py_ssize_t k = 0; k < s->n_names; k++)
                    if (s->names[k].len == name_len && memcmp(s->names[k].text, name, (size_t)name_len) == 0)
                        exact = 1;
                if (!exact || eq >= end || !all_digits(q + eq + 1, end - eq - 1)) return 0;
            }
        }
        i = end + 1;
    }
    return 1;
}

/* One whole request of the simple shape, matching nothing: 1; else 0 (defer). */
static int request_clean(const Screen *s, const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t i;
    unsigned char target[MAX_TARGET];
    if (n >= 4 && memcmp(p, "GET ", 4) == 0) {
        i = 4;
    } else if (n >= 5 && memcmp(p, "HEAD ", 5) == 0) {
        i = 5;
    } else {
        return 0;
    }
    if (i >= n || p[i] != '/') return 0;
    Py_ssize_t t0 = i, query = -1;
    unsigned char prev = 0;
    while (i < n && p[i] != ' ') {
        unsigned char c = p[i];
        if (query < 0) {
            if (c == '?') {
                query = i + 1;
            } else if (!PATH_OK[c] || (prev == '/' && (c == '/' || c == '.'))) {
                return 0; /* needs decoding or normalization (//, dot segments) */
            }
        } else if (!QUERY_OK[c]) {
            return 0;
        }
        prev = c;
        i++;
    }
    Py_ssize_t t1 = i, tlen = t1 - t0;
    if (tlen > MAX_TARGET) return 0;
    if (n - i < 11 || memcmp(p + i, " HTTP/1.1\r\n", 11) != 0) return 0;
    i += 11;
    int hosts = 0, headers = 0, params = 0;
    for (;;) {
        if (n - i < 2) return 0;
        if (p[i] == '\r') {
            if (p[i + 1] != '\n' || i + 2 != n) return 0; /* a body or a second request */
            break;
        }
        Py_ssize_t n0 = i;
        while (i < n && NAME_OK[p[i]]) i++;
        Py_ssize_t nlen = i - n0;
        if (nlen == 0 || i >= n || p[i] != ':') return 0;
        if (++headers > MAX_HEADERS) return 0;
        i++;
        Py_ssize_t v0 = i;
        while (i < n && ((p[i] >= 0x20 && p[i] <= 0x7e) || p[i] == '\t')) i++;
        if (n - i < 2 || p[i] != '\r' || p[i + 1] != '\n') return 0;
        Py_ssize_t vlen = i - v0;
        i += 2;
        const unsigned char *name = p + n0, *value = p + v0;
        if (name_is(name, nlen, "host")) {
            hosts++;
        } else if (name_is(name, nlen, "content-length") || name_is(name, nlen, "transfer-encoding") ||
                   name_is(name, nlen, "content-type") || name_is(name, nlen, "upgrade") ||
                   name_is(name, nlen, "expect")) {
            return 0;
        } else {
            unsigned char lowered_name[64];
            if (nlen > (Py_ssize_t)sizeof(lowered_name)) continue;
            for (Py_ssize_t j = 0; j < nlen; j++) lowered_name[j] = lower(name[j]);
            int is_connection = name_is(name, nlen, "connection");
            int is_cookie = contains(lowered_name, nlen, "cookie", 6);
            if (!is_connection && !is_cookie) continue;
            unsigned char lowered[MAX_TARGET];
            if (vlen > MAX_TARGET) return 0;
            for (Py_ssize_t j = 0; j < vlen; j++) lowered[j] = lower(value[j]);
            if (is_connection) {
                /* llhttp ends keep-alive or starts a tunnel: the Python parser must see it. */
                if (contains(lowered, vlen, "close", 5) || contains(lowered, vlen, "upgrade", 7)) return 0;
                continue;
            }
            if (memchr(lowered, '%', (size_t)vlen) || memchr(lowered, '+', (size_t)vlen)) return 0;
            if (contains_any_name(s, lowered, vlen)) return 0;
            for (Py_ssize_t j = 0; j < vlen; j++) {
                unsigned char c = lowered[j];
                if (c == ';' || c == ',' || c == ' ' || c == '\t' || c == '=') params++;
            }
            if (params > MAX_PARAMS) return 0;
        }
    }
    if (hosts != 1) return 0;
    for (Py_ssize_t j = 0; j < tlen; j++) target[j] = lower(p[t0 + j]);
    for (Py_ssize_t k = 0; k < s->n_short; k++)
        if (contains(target, tlen, s->short_keys[k].text, s->short_keys[k].len)) return 0;
    for (Py_ssize_t j = 0; j + 4 <= tlen; j++) {
        uint32_t h = gram_hash(target + j);
        if (s->grams[h >> 3] & (1u << (h & 7))) return 0;
    }
    Py_ssize_t path_len = (query < 0 ? t1 : query - 1) - t0;
    if (query >= 0 && !query_clean(s, target + (query - t0), t1 - query, &params)) return 0;
    if (params > MAX_PARAMS) return 0;
    return routes_clean(s, target, path_len);
}

/* ------------------------------------------------------------------ config */

static void screen_free(Screen *s) {
    for (Py_ssize_t k = 0; k < s->n_short; k++) PyMem_Free(s->short_keys[k].text);
    PyMem_Free(s->short_keys);
    for (Py_ssize_t k = 0; k < s->n_names; k++) PyMem_Free(s->names[k].text);
    PyMem_Free(s->names);
    for (Py_ssize_t r = 0; r < s->n_routes; r++) {
        for (Py_ssize_t k = 0; k < s->routes[r].count; k++) PyMem_Free(s->routes[r].segments[k].text);
        PyMem_Free(s->routes[r].segments);
        PyMem_Free(s->routes[r].kinds);
    }
    PyMem_Free(s->routes);
    memset(s, 0, sizeof(*s));
}

static int text_from(PyObject *obj, Text *out) {
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(obj, &data, &len) < 0) return -1;
    out->text = PyMem_Malloc((size_t)len + 1);
    if (out->text == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t j = 0; j < len; j++) out->text[j] = (char)lower((unsigned char)data[j]);
    out->text[len] = 0;
    out->len = len;
    return 0;
}

/* configure(path_keys: list[bytes], names: list[bytes], routes: list[tuple[list[bytes], list[int]]]) */
static int screen_build(Screen *s, PyObject *keys, PyObject *names, PyObject *routes) {
    Py_ssize_t nk = PyList_Size(keys), nn = PyList_Size(names), nr = PyList_Size(routes);
    if (nk < 0 || nn < 0 || nr < 0) return -1;
    s->short_keys = PyMem_Calloc((size_t)nk + 1, sizeof(Text));
    s->names = PyMem_Calloc((size_t)nn + 1, sizeof(Text));
    s->routes = PyMem_Calloc((size_t)nr + 1, sizeof(Route));
    if (!s->short_keys || !s->names || !s->routes) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < nk; k++) {
        Text key;
        if (text_from(PyList_GET_ITEM(keys, k), &key) < 0) return -1;
        if (key.len < 4) {
            s->short_keys[s->n_short++] = key;
        } else {
            uint32_t h = gram_hash((const unsigned char *)key.text + key.len - 4);
            s->grams[h >> 3] |= (uint8_t)(1u << (h & 7));
            PyMem_Free(key.text);
        }
    }
    for (Py_ssize_t k = 0; k < nn; k++) {
        if (text_from(PyList_GET_ITEM(names, k), &s->names[k]) < 0) return -1;
        s->n_names++;
    }
    for (Py_ssize_t r = 0; r < nr; r++) {
        PyObject *item = PyList_GET_ITEM(routes, r), *segs, *kinds;
        if (!PyArg_ParseTuple(item, "O!O!", &PyList_Type, &segs, &PyList_Type, &kinds)) return -1;
        Py_ssize_t m = PyList_GET_SIZE(segs);
        if (PyList_GET_SIZE(kinds) != m) {
            PyErr_SetString(PyExc_ValueError, "route segments and kinds differ in length");
            return -1;
        }
        Route *route = &s->routes[s->n_routes++];
        route->segments = PyMem_Calloc((size_t)m + 1, sizeof(Text));
        route->kinds = PyMem_Calloc((size_t)m + 1, sizeof(int));
        if (!route->segments || !route->kinds) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k < m; k++) {
            if (text_from(PyList_GET_ITEM(segs, k), &route->segments[k]) < 0) return -1;
            route->count++;
            long kind = PyLong_AsLong(PyList_GET_ITEM(kinds, k));
            if (kind == -1 && PyErr_Occurred()) return -1;
            route->kinds[k] = (int)kind;
        }
    }
    s->enabled = 1;
    return 0;
}

/* ------------------------------------------------------------------ packets */

typedef struct {
    const unsigned char *key;
    Py_ssize_t key_len;
    uint32_t seq;
    uint8_t flags;
    const unsigned char *payload;
    Py_ssize_t payload_len;
} Segment;

/* IPv4 without options or IPv6 without extension headers, carrying TCP (decode.py's
 * fast paths, which the general decoder agrees with). 0: not such a packet. */
static int parse_segment(const unsigned char *d, Py_ssize_t size, Segment *out) {
    Py_ssize_t ip_len, total;
    if (size >= 40 && d[0] == 0x45 && d[9] == 6) {
        total = ((Py_ssize_t)d[2] << 8) | d[3];
        unsigned frag = ((unsigned)d[6] << 8) | d[7];
        if (total < 40 || total > size || (frag & 0x3FFF)) return 0;
        ip_len = 20;
        out->key = d + 12; /* src, dst, then the TCP ports follow at d + 20 */
        out->key_len = 8;
    } else if (size >= 60 && (d[0] >> 4) == 6 && d[6] == 6) {
        total = 40 + (((Py_ssize_t)d[4] << 8) | d[5]);
        if (total > size || total < 60) return 0;
        ip_len = 40;
        out->key = d + 8;
        out->key_len = 32;
    } else {
        return 0;
    }
    const unsigned char *tcp = d + ip_len;
    Py_ssize_t doff = (Py_ssize_t)(tcp[12] >> 4) << 2;
    if (doff < 20 || doff > total - ip_len) return 0;
    out->seq = ((uint32_t)tcp[4] << 24) | ((uint32_t)tcp[5] << 16) | ((uint32_t)tcp[6] << 8) | tcp[7];
    out->flags = tcp[13];
    out->payload = tcp + doff;
    out->payload_len = total - ip_len - doff;
    return 1;
}

static PyObject *make_key(const unsigned char *d, const Segment *seg) {
    /* addresses then ports: the client->server direction of the segment */
    unsigned char buf[36];
    Py_ssize_t ip_len = seg->key_len == 8 ? 20 : 40;
    memcpy(buf, seg->key, (size_t)seg->key_len);
    memcpy(buf + seg->key_len, d + ip_len, 4);
    return PyBytes_FromStringAndSize((const char *)buf, seg->key_len + 4);
}

/* ------------------------------------------------------------------ Entry */

/* Entries and lanes take part in the cyclic GC: a flow's parser state holds cycles. */
static int Entry_traverse(Entry *self, visitproc visit, void *arg) {
    Py_VISIT(self->flow);
    Py_VISIT(self->decision);
    Py_VISIT(self->active);
    Py_VISIT(self->lookup);
    Py_VISIT(self->state);
    return 0;
}

static int Entry_clear(Entry *self) {
    Py_CLEAR(self->flow);
    Py_CLEAR(self->decision);
    Py_CLEAR(self->active);
    Py_CLEAR(self->lookup);
    Py_CLEAR(self->state);
    PyMem_Free(self->body);
    self->body = NULL;
    self->body_len = self->body_cap = 0;
    return 0;
}

static void Entry_dealloc(Entry *self) {
    PyObject_GC_UnTrack(self);
    Entry_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject EntryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agent.core._lane.Entry",
    .tp_basicsize = sizeof(Entry),
    .tp_dealloc = (destructor)Entry_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Entry_traverse,
    .tp_clear = (inquiry)Entry_clear,
};

/* ------------------------------------------------------------------ Lane */

static int Lane_init(Lane *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"depth", "max_gaps", "catch_up", NULL};
    Py_ssize_t depth;
    int max_gaps = 16;
    PyObject *catch_up = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|iO", kwlist, &depth, &max_gaps, &catch_up))
        return -1;
    Py_INCREF(catch_up);
    Py_XSETREF(self->catch_up, catch_up);
    if (max_gaps < 1 || max_gaps > LANE_GAPS) {
        PyErr_Format(PyExc_ValueError, "max_gaps must be 1..%d", LANE_GAPS);
        return -1;
    }
    self->depth = depth;
    self->max_gaps = max_gaps;
    Py_XSETREF(self->entries, PyDict_New());
    return self->entries ? 0 : -1;
}

static int Lane_traverse(Lane *self, visitproc visit, void *arg) {
    Py_VISIT(self->entries);
    Py_VISIT(self->catch_up);
    return 0;
}

static int Lane_clear(Lane *self) {
    Py_CLEAR(self->entries);
    Py_CLEAR(self->catch_up);
    return 0;
}

static void Lane_dealloc(Lane *self) {
    PyObject_GC_UnTrack(self);
    screen_free(&self->screen);
    Lane_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Before the lane forgets its flows: body bytes kept aside go back to Python. */
static int flush_bodies(Lane *self) {
    PyObject *values = PyDict_Values(self->entries);
    if (values == NULL) return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values) && rc == 0; i++) {
        Entry *entry = (Entry *)PyList_GET_ITEM(values, i);
        if (entry->body_mode) rc = give_body(self, entry);
    }
    Py_DECREF(values);
    return rc;
}

static PyObject *Lane_configure(Lane *self, PyObject *args) {
    PyObject *keys, *names, *routes;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &keys, &PyList_Type, &names, &PyList_Type, &routes))
        return NULL;
    if (flush_bodies(self) < 0) return NULL;
    PyDict_Clear(self->entries);
    screen_free(&self->screen);
    if (screen_build(&self->screen, keys, names, routes) < 0) {
        screen_free(&self->screen);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Lane_disable(Lane *self, PyObject *Py_UNUSED(ignored)) {
    if (flush_bodies(self) < 0) return NULL;
    PyDict_Clear(self->entries);
    screen_free(&self->screen);
    Py_RETURN_NONE;
}

/* admit(packet, next_seq, flow, decision, active, lookup, state) -> key bytes or None */
static PyObject *Lane_admit(Lane *self, PyObject *args) {
    Py_buffer data;
    unsigned long next_seq;
    PyObject *flow, *decision, *active, *lookup, *state;
    Py_ssize_t body_left = 0, budget = 0;
    if (!PyArg_ParseTuple(args, "y*kOOOOO|nn", &data, &next_seq, &flow, &decision, &active, &lookup,
                          &state, &body_left, &budget))
        return NULL;
    Segment seg;
    PyObject *result = NULL;
    if (!self->screen.enabled || !parse_segment(data.buf, data.len, &seg)) {
        PyBuffer_Release(&data);
        Py_RETURN_NONE;
    }
    PyObject *key = make_key(data.buf, &seg);
    PyBuffer_Release(&data);
    if (key == NULL) return NULL;
    Entry *entry = PyObject_GC_New(Entry, &EntryType);
    if (entry == NULL) goto done;
    entry->next_seq = (uint32_t)next_seq;
    Py_INCREF(flow);
    entry->flow = flow;
    Py_INCREF(decision);
    entry->decision = decision;
    Py_INCREF(active);
    entry->active = active;
    Py_INCREF(lookup);
    entry->lookup = lookup;
    Py_INCREF(state);
    entry->state = state;
    entry->n_gaps = 0;
    entry->body_mode = body_left > 0 && budget > 0;
    entry->body_left = body_left;
    entry->budget = budget;
    entry->body = NULL;
    entry->body_len = entry->body_cap = 0;
    entry->n_body_holes = 0;
    PyObject_GC_Track(entry);
    if (PyDict_SetItem(self->entries, key, (PyObject *)entry) == 0) {
        self->admitted++;
        result = key;
        Py_INCREF(result);
    }
    Py_DECREF(entry);
done:
    Py_DECREF(key);
    return result;
}

static PyObject *Lane_discard(Lane *self, PyObject *key) {
    if (PyDict_DelItem(self->entries, key) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) return NULL;
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

/* Body mode: the bytes kept aside go to Python, which delivers and parses them. */
static int give_body(Lane *self, Entry *entry) {
    if (entry->body_len == 0 && entry->n_body_holes == 0) return 0;
    if (self->catch_up == NULL || self->catch_up == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "fast lane: body bytes but no catch_up");
        return -1;
    }
    PyObject *body = PyBytes_FromStringAndSize(entry->body, entry->body_len);
    if (body == NULL) return -1;
    PyObject *holes = PyList_New(entry->n_body_holes);
    if (holes == NULL) {
        Py_DECREF(body);
        return -1;
    }
    for (int h = 0; h < entry->n_body_holes; h++) {
        PyObject *hole = Py_BuildValue("(nnk)", entry->body_holes[h].offset, entry->body_holes[h].size,
                                       (unsigned long)entry->body_holes[h].seq_after);
        if (hole == NULL) {
            Py_DECREF(body);
            Py_DECREF(holes);
            return -1;
        }
        PyList_SET_ITEM(holes, h, hole);
    }
    entry->body_len = 0;
    entry->n_body_holes = 0;
    PyObject *done = PyObject_CallFunctionObjArgs(self->catch_up, entry->flow, entry->state, body,
                                                  holes, NULL);
    Py_DECREF(body);
    Py_DECREF(holes);
    if (done == NULL) return -1;
    Py_DECREF(done);
    return 0;
}

/* Hand a flow back: its Python stream continues at the lane's next byte. */
static int hand_back(Lane *self, PyObject *key, Entry *entry) {
    int rc = 0;
    if (entry->body_mode) {
        /* Python's stream stopped at the admission byte: the kept bytes follow it. */
        rc = give_body(self, entry);
        self->handoffs++;
        if (PyDict_DelItem(self->entries, key) < 0) rc = -1;
        return rc;
    }
    PyObject *stream = PyObject_GetAttr(entry->flow, str_stream);
    if (stream == NULL) return -1;
    if (stream != Py_None) {
        PyObject *base = PyLong_FromUnsignedLong(entry->next_seq);
        if (base == NULL || PyObject_SetAttr(stream, str_base, base) < 0) rc = -1;
        Py_XDECREF(base);
    }
    Py_DECREF(stream);
    for (int g = 0; g < entry->n_gaps && rc == 0; g++) {
        PyObject *done = PyObject_CallMethod(entry->state, "add_gap", "kk",
                                             (unsigned long)entry->gaps[g][0],
                                             (unsigned long)entry->gaps[g][1]);
        if (done == NULL) rc = -1;
        Py_XDECREF(done);
    }
    entry->n_gaps = 0;
    self->handoffs++;
    if (PyDict_DelItem(self->entries, key) < 0) rc = -1;
    return rc;
}

/* Keep the flow table's view as the Python path would: recency, last seen. 0: the flow
 * left the table (Python decides, and no state of the entry was touched). */
static int touch_flow(Lane *self, Entry *entry, PyObject *now) {
    PyObject *moved = PyObject_CallMethodOneArg(entry->active, str_move_to_end, entry->lookup);
    int ok = moved != NULL && PyObject_SetAttr(entry->flow, str_last_seen, now) == 0;
    Py_XDECREF(moved);
    if (!ok) {
        PyErr_Clear();
        self->back_table++;
    }
    return ok;
}

/* Body mode: a segment in order, or after a hole that stays inside the body, kept aside. */
static int take_body(Lane *self, Entry *entry, const Segment *seg, int past_depth, uint32_t ahead,
                     PyObject *now) {
    Py_ssize_t hole = ahead < 0x80000000u ? (Py_ssize_t)ahead : -1;
    int take = past_depth == 0 && (seg->flags & ~TCP_PSH) == TCP_ACK && hole >= 0 &&
               (hole == 0 || (seg->payload_len > 0 && entry->n_body_holes < LANE_GAPS)) &&
               hole + seg->payload_len <= entry->body_left &&
               entry->body_len + seg->payload_len <= entry->budget;
    if (!take) {
        self->back_order++;
        return 0;
    }
    if (!touch_flow(self, entry, now)) return 0;
    if (entry->body_len + seg->payload_len > entry->body_cap) {
        Py_ssize_t cap = entry->body_cap ? entry->body_cap * 2 : 4096;
        while (cap < entry->body_len + seg->payload_len) cap *= 2;
        char *grown = PyMem_Realloc(entry->body, (size_t)cap);
        if (grown == NULL) return 0; /* no room: Python takes the flow */
        entry->body = grown;
        entry->body_cap = cap;
    }
    if (hole > 0) {
        entry->body_holes[entry->n_body_holes].offset = entry->body_len;
        entry->body_holes[entry->n_body_holes].size = hole;
        entry->body_holes[entry->n_body_holes].seq_after = seg->seq;
        entry->n_body_holes++;
        entry->body_left -= hole;
        entry->next_seq = seg->seq;
        self->holes++;
    }
    if (seg->payload_len > 0) {
        memcpy(entry->body + entry->body_len, seg->payload, (size_t)seg->payload_len);
        entry->body_len += seg->payload_len;
        entry->body_left -= seg->payload_len;
    }
    entry->next_seq += (uint32_t)seg->payload_len;
    self->body_hits++;
    return 1;
}

/* Request mode: one clean request in order, or after a hole (a segment fail-open let
 * past): moved past as engine.py does, the hole kept for Python, which parses its bytes
 * should they come. */
static int take_request(Lane *self, Entry *entry, const Segment *seg, int past_depth,
                        uint32_t ahead, PyObject *now) {
    int hole = ahead != 0 && ahead < 0x80000000u && seg->payload_len > 0;
    if (past_depth != 0 || (seg->flags & ~TCP_PSH) != TCP_ACK || (ahead != 0 && !hole)) {
        self->back_order++; /* past the depth, a FIN/RST/SYN, a gap or a retransmission */
        return 0;
    }
    if (seg->payload_len >= self->depth ||
        (seg->payload_len > 0 && !request_clean(&self->screen, seg->payload, seg->payload_len))) {
        self->back_request++;
        return 0;
    }
    if (!touch_flow(self, entry, now)) return 0;
    if (hole) {
        if (entry->n_gaps == self->max_gaps) { /* the oldest is given up, as in Python */
            memmove(entry->gaps[0], entry->gaps[1], sizeof(entry->gaps[0]) * (size_t)(self->max_gaps - 1));
            entry->n_gaps--;
        }
        entry->gaps[entry->n_gaps][0] = entry->next_seq;
        entry->gaps[entry->n_gaps][1] = seg->seq;
        entry->n_gaps++;
        entry->next_seq = seg->seq;
        self->holes++;
    }
    entry->next_seq += (uint32_t)seg->payload_len;
    return 1;
}

/* screen(packet, now, past_depth) -> the flow's accept Decision, or None: decide in Python */
static PyObject *Lane_screen(Lane *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "screen(packet, now, past_depth)");
        return NULL;
    }
    if (PyDict_GET_SIZE(self->entries) == 0) Py_RETURN_NONE;
    char *data;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(args[0], &data, &size) < 0) return NULL;
    Segment seg;
    if (!parse_segment((const unsigned char *)data, size, &seg)) Py_RETURN_NONE;
    PyObject *key = make_key((const unsigned char *)data, &seg);
    if (key == NULL) return NULL;
    Entry *entry = (Entry *)PyDict_GetItemWithError(self->entries, key);
    if (entry == NULL) {
        Py_DECREF(key);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(entry);
    int past_depth = PyObject_IsTrue(args[2]);
    uint32_t ahead = seg.seq - entry->next_seq;
    int taken = entry->body_mode ? take_body(self, entry, &seg, past_depth, ahead, args[1])
                                 : take_request(self, entry, &seg, past_depth, ahead, args[1]);
    PyObject *result = Py_None;
    if (taken) {
        self->hits++;
        result = entry->decision;
    } else if (hand_back(self, key, entry) < 0) {
        result = NULL;
    }
    Py_DECREF(entry);
    Py_DECREF(key);
    Py_XINCREF(result);
    return result;
}

/* release(key): hand the flow back now, if the lane holds it (a client packet of the flow
 * the lane could not parse, e.g. IPv4 options or IPv6 extension headers, reached Python). */
static PyObject *Lane_release(Lane *self, PyObject *key) {
    Entry *entry = (Entry *)PyDict_GetItemWithError(self->entries, key);
    if (entry == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(entry);
    int rc = hand_back(self, key, entry);
    Py_DECREF(entry);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Lane_stats(Lane *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{s:K,s:K,s:K,s:n,s:K,s:K,s:K,s:K,s:K}", "hits", self->hits, "handoffs",
                         self->handoffs, "admitted", self->admitted, "flows",
                         PyDict_GET_SIZE(self->entries), "back_order", self->back_order,
                         "back_request", self->back_request, "back_table", self->back_table,
                         "holes", self->holes, "body_hits", self->body_hits);
}

/* request_clean(payload) -> bool: the screen alone, for tests. */
static PyObject *Lane_request_clean(Lane *self, PyObject *arg) {
    char *data;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(arg, &data, &size) < 0) return NULL;
    if (!self->screen.enabled) Py_RETURN_FALSE;
    return PyBool_FromLong(request_clean(&self->screen, (const unsigned char *)data, size));
}

static PyMethodDef Lane_methods[] = {
    {"configure", (PyCFunction)Lane_configure, METH_VARARGS, "Set the screen from intel; forget every flow."},
    {"disable", (PyCFunction)Lane_disable, METH_NOARGS, "Screen nothing; forget every flow."},
    {"admit", (PyCFunction)Lane_admit, METH_VARARGS, "Take an idle flow in."},
    {"discard", (PyCFunction)Lane_discard, METH_O, "Forget a flow (it left the flow table)."},
    {"release", (PyCFunction)Lane_release, METH_O, "Hand a flow back now, if held."},
    {"screen", (PyCFunction)(void (*)(void))Lane_screen, METH_FASTCALL, "Decide a packet or hand it back."},
    {"stats", (PyCFunction)Lane_stats, METH_NOARGS, "Counters."},
    {"request_clean", (PyCFunction)Lane_request_clean, METH_O, "Whether the screen passes one request."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agent.core._lane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_doc = "The decision core's fast lane for idle keep-alive HTTP flows.",
    .tp_methods = Lane_methods,
    .tp_init = (initproc)Lane_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef lane_module = {
    PyModuleDef_HEAD_INIT, "agent.core._lane", "Fast lane of the decision core.", -1, NULL,
};

PyMODINIT_FUNC PyInit__lane(void) {
    init_tables();
    if (PyType_Ready(&EntryType) < 0 || PyType_Ready(&LaneType) < 0) return NULL;
    str_move_to_end = PyUnicode_InternFromString("move_to_end");
    str_last_seen = PyUnicode_InternFromString("last_seen");
    str_stream = PyUnicode_InternFromString("stream");
    str_base = PyUnicode_InternFromString("base");
    str_add_gap = PyUnicode_InternFromString("add_gap");
    if (!str_move_to_end || !str_last_seen || !str_stream || !str_base || !str_add_gap) return NULL;
    PyObject *m = PyModule_Create(&lane_module);
    if (m == NULL) return NULL;
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
