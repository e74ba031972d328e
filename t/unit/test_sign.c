/*
 * Unit tests of the signer (ngx_http_idv_sign.c) against the vectors the
 * official SDK produced (t/data/signature-vectors.json), plus the
 * building blocks: percent-encoding, Base64, digests, constant-time
 * comparison, parameter sort and process init.
 *
 * usage: test_sign [t/data | path/to/signature-vectors.json]
 *        (or IDV_TEST_DATA=dir); TAP on stdout.
 */


#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "ngx_http_idv_core.h"
#include "tap.h"


#define TEST_VECTORS_FILE   "signature-vectors.json"


#include "test_pool.h"


typedef struct {
    char                       *key;
    char                       *value;
} test_pair_t;


static int test_contains(const u_char *data, size_t len, const char *needle);


/* "a.b.c" in a JSON object; NULL unless it is a string */

static const char *
test_get(const cJSON *obj, const char *path)
{
    char        name[128];
    size_t      n;
    const char  *dot;

    while (obj != NULL) {
        dot = strchr(path, '.');
        n = dot ? (size_t) (dot - path) : strlen(path);

        if (n >= sizeof(name)) {
            return NULL;
        }

        memcpy(name, path, n);
        name[n] = '\0';

        obj = cJSON_GetObjectItemCaseSensitive(obj, name);

        if (dot == NULL) {
            return cJSON_IsString(obj) ? obj->valuestring : NULL;
        }

        path = dot + 1;
    }

    return NULL;
}


/* a missing expectation must fail the test, not crash it */

static const char *
test_expect(const cJSON *obj, const char *id, const char *path)
{
    const char  *s;

    s = test_get(obj, path);

    if (s == NULL) {
        tap_ok(0, "%s: vector has %s", id, path);
        return "\x01missing";
    }

    return s;
}


static int
test_hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* %XX-decode a copy of [s, s + len); NULL on a malformed escape */

static char *
test_unescape(const char *s, size_t len)
{
    int     h, l;
    char   *d, *p;
    size_t  i;

    d = malloc(len + 1);
    if (d == NULL) {
        return NULL;
    }

    p = d;

    for (i = 0; i < len; i++) {

        if (s[i] != '%') {
            *p++ = s[i];
            continue;
        }

        if (i + 2 >= len) {
            free(d);
            return NULL;
        }

        h = test_hexval((u_char) s[i + 1]);
        l = test_hexval((u_char) s[i + 2]);

        if (h < 0 || l < 0) {
            free(d);
            return NULL;
        }

        *p++ = (char) (h << 4 | l);
        i += 2;
    }

    *p = '\0';

    return d;
}


static int
test_pair_cmp(const void *a, const void *b)
{
    int                 rc;
    const test_pair_t  *pa, *pb;

    pa = a;
    pb = b;

    rc = strcmp(pa->key, pb->key);

    return rc ? rc : strcmp(pa->value, pb->value);
}


static void
test_pairs_free(test_pair_t *pairs, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(pairs[i].key);
        free(pairs[i].value);
    }

    free(pairs);
}


/* split a query into decoded, sorted (key, value) pairs */

static test_pair_t *
test_query_pairs(const char *q, size_t len, size_t *np)
{
    size_t        n, i;
    const char   *p, *end, *amp, *eq;
    test_pair_t  *pairs;

    *np = 0;

    if (len == 0) {
        return calloc(1, sizeof(test_pair_t));
    }

    n = 1;

    for (i = 0; i < len; i++) {
        n += (q[i] == '&');
    }

    pairs = calloc(n, sizeof(test_pair_t));
    if (pairs == NULL) {
        return NULL;
    }

    p = q;
    end = q + len;

    for (i = 0; i < n; i++) {
        amp = memchr(p, '&', end - p);
        if (amp == NULL) {
            amp = end;
        }

        eq = memchr(p, '=', amp - p);
        if (eq == NULL) {
            eq = amp;
        }

        pairs[i].key = test_unescape(p, eq - p);
        pairs[i].value = test_unescape(eq < amp ? eq + 1 : amp,
                                       eq < amp ? (size_t) (amp - eq - 1) : 0);

        if (pairs[i].key == NULL || pairs[i].value == NULL) {
            test_pairs_free(pairs, i + 1);
            return NULL;
        }

        p = amp + 1;
    }

    qsort(pairs, n, sizeof(test_pair_t), test_pair_cmp);

    *np = n;

    return pairs;
}


/* our wire query carries exactly the parameters the SDK sent */

static int
test_same_params(const u_char *q, size_t len, const char *target)
{
    int           same;
    size_t        i, na, nb;
    test_pair_t  *a, *b;

    if (strncmp(target, "/?", 2) == 0) {
        target += 2;

    } else if (*target == '/') {
        target++;
    }

    a = test_query_pairs((const char *) q, len, &na);
    b = test_query_pairs(target, strlen(target), &nb);

    same = (a != NULL && b != NULL && na == nb);

    for (i = 0; same && i < na; i++) {
        if (strcmp(a[i].key, b[i].key) != 0
            || strcmp(a[i].value, b[i].value) != 0)
        {
            printf("#   param %s=%s vs %s=%s\n",
                   a[i].key, a[i].value, b[i].key, b[i].value);
            same = 0;
        }
    }

    if (a) {
        test_pairs_free(a, na);
    }

    if (b) {
        test_pairs_free(b, nb);
    }

    return same;
}


/*
 * The vector's query and body parameters in one array, reversed (body
 * parameters first, each list in descending order), so that the
 * signer's sort has work to do.
 */

static ngx_http_idv_param_t *
test_params(const cJSON *inputs, size_t *np)
{
    int                    body;
    size_t                 n, i, k;
    const cJSON           *obj[2], *it;
    ngx_http_idv_param_t  *params, t;

    obj[0] = cJSON_GetObjectItemCaseSensitive(inputs, "query_params");
    obj[1] = cJSON_GetObjectItemCaseSensitive(inputs, "body_params");

    n = 0;

    for (body = 0; body < 2; body++) {
        if (!cJSON_IsObject(obj[body])) {
            continue;
        }

        cJSON_ArrayForEach(it, obj[body]) {
            n++;
        }
    }

    params = calloc(n ? n : 1, sizeof(ngx_http_idv_param_t));
    if (params == NULL) {
        return NULL;
    }

    i = 0;

    for (body = 0; body < 2; body++) {
        if (!cJSON_IsObject(obj[body])) {
            continue;
        }

        cJSON_ArrayForEach(it, obj[body]) {
            if (!cJSON_IsString(it) || it->string == NULL) {
                free(params);
                return NULL;
            }

            params[i].key = test_str(it->string);
            params[i].value = test_str(it->valuestring);
            params[i].body = body;
            i++;
        }
    }

    for (k = 0; k < n / 2; k++) {
        t = params[k];
        params[k] = params[n - 1 - k];
        params[n - 1 - k] = t;
    }

    *np = n;

    return params;
}


static int
test_setup(ngx_http_idv_sign_t *s, const cJSON *v, test_pool_t *pool)
{
    const char   *a;
    const cJSON  *in;

    memset(s, 0, sizeof(ngx_http_idv_sign_t));

    in = cJSON_GetObjectItemCaseSensitive(v, "inputs");

    a = test_get(v, "signature_version");
    if (in == NULL || a == NULL) {
        return -1;
    }

    s->algorithm = strcmp(a, "v1") == 0 ? NGX_HTTP_IDV_SIGN_V1
                                        : NGX_HTTP_IDV_SIGN_V3;

#define test_in(field)                                                      \
    if (test_get(in, #field) == NULL) {                                     \
        return -1;                                                          \
    }                                                                       \
    s->field = test_str(test_get(in, #field))

    test_in(access_key_id);
    test_in(access_key_secret);
    test_in(host);
    test_in(action);
    test_in(version);
    test_in(timestamp);
    test_in(nonce);

#undef test_in

    s->form = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(in,
                                                  "sdk_passes_body_map"));

    s->params = test_params(in, &s->nparams);
    if (s->params == NULL) {
        return -1;
    }

    s->alloc = test_alloc;
    s->alloc_data = pool;

    return 0;
}


static int
test_ends_with(const u_char *data, size_t len, const char *tail)
{
    size_t  n;

    n = strlen(tail);

    return len >= n && memcmp(data + len - n, tail, n) == 0;
}


static void
test_vector(const cJSON *v)
{
    int                   rc;
    size_t                i, n;
    char                  key[128];
    const char           *id, *sig;
    test_pool_t           pool;
    ngx_http_idv_sign_t   s;
    u_char                mac[32], raw[32];

    id = test_get(v, "id");
    if (id == NULL) {
        id = "(no id)";
    }

    memset(&pool, 0, sizeof(test_pool_t));

    if (test_setup(&s, v, &pool) != 0) {
        tap_ok(0, "%s: inputs are usable", id);
        return;
    }

    rc = ngx_http_idv_sign(&s);
    tap_ok(rc == 0, "%s: signs", id);

    if (rc != 0) {
        free(s.params);
        test_pool_free(&pool);
        return;
    }

    n = 0;

    for (i = 1; i < s.nparams; i++) {
        n += strcmp((char *) s.params[i - 1].key.data,
                    (char *) s.params[i].key.data) > 0;
    }

    tap_ok(n == 0, "%s: parameters sorted in place", id);

    tap_is_str(s.body.len, s.body.data, test_expect(v, id, "wire.body"),
               "%s: form body is the SDK's", id);

    tap_ok(test_same_params(s.query.data, s.query.len,
                            test_expect(v, id, "wire.request_target")),
           "%s: wire query carries the SDK's parameters", id);

    if (s.algorithm == NGX_HTTP_IDV_SIGN_V1) {

        tap_is_str(s.canonical_query.len, s.canonical_query.data,
                   test_expect(v, id, "v1.canonicalized_query_string"),
                   "%s: v1 canonicalized query string", id);

        tap_is_str(s.string_to_sign.len, s.string_to_sign.data,
                   test_expect(v, id, "v1.string_to_sign"),
                   "%s: v1 string to sign", id);

        sig = test_expect(v, id, "v1.signature");

        tap_is_str(s.signature.len, s.signature.data, sig,
                   "%s: v1 signature", id);

        tap_ok(test_ends_with(s.query.data, s.query.len,
                   test_expect(v, id, "v1.signature_query_param_as_sent")),
               "%s: wire query ends with &Signature=enc(signature)", id);

        tap_ok(s.canonical_request.len == 0 && s.authorization.len == 0,
               "%s: v1 has no canonical request or Authorization", id);

        /* the building blocks agree with the composed signer */

        n = ngx_http_idv_base64_decode(raw, (const u_char *) sig,
                                       strlen(sig));

        rc = snprintf(key, sizeof(key), "%.*s&",
                      (int) s.access_key_secret.len,
                      s.access_key_secret.data);

        rc = ngx_http_idv_hmac_sha1((u_char *) key, (size_t) rc,
                                    s.string_to_sign.data,
                                    s.string_to_sign.len, mac);

        tap_ok(n == 20 && rc == 0 && memcmp(raw, mac, 20) == 0,
               "%s: hmac_sha1(secret&, sts) == base64 decode(signature)",
               id);

    } else {

        tap_is_str(s.canonical_request.len, s.canonical_request.data,
                   test_expect(v, id, "v3_minimal_headers.canonical_request"),
                   "%s: v3 canonical request", id);

        tap_is_str(s.canonical_query.len, s.canonical_query.data,
                   test_expect(v, id, "v3.canonical_query_string"),
                   "%s: v3 canonical query string", id);

        tap_is_str(s.query.len, s.query.data,
                   test_expect(v, id, "v3.canonical_query_string"),
                   "%s: v3 wire query is the canonical query", id);

        tap_is_str(s.string_to_sign.len, s.string_to_sign.data,
                   test_expect(v, id, "v3_minimal_headers.string_to_sign"),
                   "%s: v3 string to sign", id);

        tap_is_str(s.signature.len, s.signature.data,
                   test_expect(v, id, "v3_minimal_headers.signature"),
                   "%s: v3 signature", id);

        tap_is_str(s.authorization.len, s.authorization.data,
                   test_expect(v, id, "v3_minimal_headers.authorization"),
                   "%s: v3 Authorization", id);

        tap_is_str(64, s.content_sha256,
                   test_expect(v, id, "wire.body_sha256_hex"),
                   "%s: x-acs-content-sha256 is sha256(body)", id);

        tap_is_str(64, s.content_sha256,
                   test_expect(v, id,
                       "v3_minimal_headers.headers.x-acs-content-sha256"),
                   "%s: x-acs-content-sha256 header value", id);

        tap_ok(s.form == (test_get(v,
                   "v3_minimal_headers.headers.content-type") != NULL),
               "%s: content-type signed exactly when sent", id);
    }

    /* the same inputs with another secret must not verify */

    s.access_key_secret = test_str("testsecreT");

    rc = ngx_http_idv_sign(&s);

    tap_ok(rc == 0 && s.signature.len > 0
           && strncmp((char *) s.signature.data,
                      test_expect(v, id, s.algorithm == NGX_HTTP_IDV_SIGN_V1
                                  ? "v1.signature"
                                  : "v3_minimal_headers.signature"),
                      s.signature.len) != 0,
           "%s: another secret gives another signature", id);

    free(s.params);
    test_pool_free(&pool);
}


/* body parameters without form=1 still sign (and send) a content-type */

static void
test_form_implied(const cJSON *vectors)
{
    int                   rc;
    const char           *exp;
    const cJSON          *v;
    test_pool_t           pool;
    ngx_http_idv_sign_t   s;

    cJSON_ArrayForEach(v, vectors) {
        exp = test_get(v, "id");

        if (exp && strcmp(exp, "v3-ekycverify-base64-body") == 0) {
            break;
        }
    }

    memset(&pool, 0, sizeof(test_pool_t));

    if (v == NULL || test_setup(&s, v, &pool) != 0) {
        tap_ok(0, "v3-ekycverify-base64-body is present");
        return;
    }

    s.form = 0;

    rc = ngx_http_idv_sign(&s);

    exp = test_get(v, "v3_minimal_headers.authorization");

    tap_ok(rc == 0 && s.form == 1, "body parameters imply form=1");
    tap_is_str(s.authorization.len, s.authorization.data, exp ? exp : "",
               "body parameters sign content-type even with form=0");

    free(s.params);
    test_pool_free(&pool);
}


/*
 * Temporary credentials: V3 sends and signs x-acs-security-token, sorted
 * between x-acs-date and x-acs-signature-nonce; V1 signs SecurityToken,
 * sorted with the others (just before SignatureMethod here).  Without a
 * token the vectors above hold byte for byte.
 */

static void
test_security_token(const cJSON *vectors)
{
    int                   rc, found;
    const char           *id;
    const cJSON          *v;
    test_pool_t           pool;
    ngx_http_idv_sign_t   s;

    static const char  token[] = "CAIS+token/=";

    found = 0;

    cJSON_ArrayForEach(v, vectors) {
        id = test_get(v, "id");

        if (id == NULL || (strcmp(id, "v3-checkresult") != 0
                           && strcmp(id, "v1-checkresult") != 0
                           && strcmp(id, "v3-ekycverify-base64-body") != 0))
        {
            continue;
        }

        memset(&pool, 0, sizeof(test_pool_t));

        if (test_setup(&s, v, &pool) != 0) {
            tap_ok(0, "%s: inputs are usable", id);
            continue;
        }

        found++;

        s.security_token.data = (u_char *) token;
        s.security_token.len = sizeof(token) - 1;

        rc = ngx_http_idv_sign(&s);

        tap_ok(rc == 0, "%s with a token: signs", id);

        if (rc != 0) {
            free(s.params);
            test_pool_free(&pool);
            continue;
        }

        if (id[1] == '3') {
            tap_ok(test_contains(s.canonical_request.data,
                                 s.canonical_request.len,
                                 "\nx-acs-date:")
                   && test_contains(s.canonical_request.data,
                                    s.canonical_request.len,
                                    "\nx-acs-security-token:CAIS+token/=\n"
                                    "x-acs-signature-nonce:"),
                   "%s: the token is a canonical header, in order", id);
            tap_ok(test_contains(s.authorization.data, s.authorization.len,
                                 ";x-acs-date;x-acs-security-token;"
                                 "x-acs-signature-nonce;x-acs-version,"),
                   "%s: x-acs-security-token is a signed header", id);
            tap_ok(test_contains(s.canonical_request.data,
                                 s.canonical_request.len,
                                 ";x-acs-date;x-acs-security-token;"
                                 "x-acs-signature-nonce;x-acs-version\n"),
                   "%s: and in the canonical request's SignedHeaders", id);

        } else {
            tap_ok(test_contains(s.canonical_query.data,
                                 s.canonical_query.len,
                                 "&SecurityToken=CAIS%2Btoken%2F%3D"
                                 "&SignatureMethod=HMAC-SHA1&"),
                   "%s: SecurityToken is a signed parameter, in order", id);
            tap_ok(test_contains(s.query.data, s.query.len,
                                 "SecurityToken=CAIS%2Btoken%2F%3D&"),
                   "%s: and is sent in the query", id);
        }

        free(s.params);
        test_pool_free(&pool);

        /* the one allocation fails: -1, with a token too */

        memset(&pool, 0, sizeof(test_pool_t));

        if (test_setup(&s, v, &pool) == 0) {
            s.security_token.data = (u_char *) token;
            s.security_token.len = sizeof(token) - 1;
            pool.fail_at = 1;

            tap_ok(ngx_http_idv_sign(&s) == -1,
                   "%s with a token: allocation failure returns -1", id);

            free(s.params);
            test_pool_free(&pool);
        }
    }

    tap_ok(found == 3, "security token: three vectors checked");
}


static int
test_contains(const u_char *data, size_t len, const char *needle)
{
    size_t  i, n;

    n = strlen(needle);

    for (i = 0; i + n <= len; i++) {
        if (memcmp(data + i, needle, n) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
test_alloc_failure(const cJSON *vectors)
{
    int                   rc;
    const cJSON          *v;
    test_pool_t           pool;
    ngx_http_idv_sign_t   s;

    cJSON_ArrayForEach(v, vectors) {
        memset(&pool, 0, sizeof(test_pool_t));

        if (test_setup(&s, v, &pool) != 0) {
            continue;
        }

        pool.fail_at = 1;

        rc = ngx_http_idv_sign(&s);

        tap_ok(rc == -1, "%s: allocation failure returns -1",
               test_get(v, "id"));

        free(s.params);
        test_pool_free(&pool);
    }

    memset(&pool, 0, sizeof(test_pool_t));
    memset(&s, 0, sizeof(ngx_http_idv_sign_t));

    s.algorithm = 7;
    s.alloc = test_alloc;
    s.alloc_data = &pool;

    tap_ok(ngx_http_idv_sign(&s) == -1, "unknown algorithm returns -1");

    test_pool_free(&pool);
}


static int
test_canonical_byte(int c, char *out)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
        || (c >= '0' && c <= '9')
        || c == '-' || c == '_' || c == '.' || c == '~')
    {
        out[0] = (char) c;
        out[1] = '\0';
        return 1;
    }

    sprintf(out, "%%%02X", c);

    return 3;
}


static void test_percent_encoding_long(void);


static void
test_percent_encoding(const cJSON *root)
{
    int           c, bad;
    char          exp[4];
    size_t        len, n;
    u_char        buf[64], *end;
    const char   *ch, *canon;
    const cJSON  *t, *row;

    t = cJSON_GetObjectItemCaseSensitive(root, "percent_encoding_table");

    n = 0;

    cJSON_ArrayForEach(row, t) {
        ch = test_get(row, "char");
        canon = test_get(row, "canonical");

        if (ch == NULL || canon == NULL || strlen(ch) > 16) {
            tap_ok(0, "percent_encoding_table row %zu is well-formed", n);
            continue;
        }

        n++;

        len = ngx_http_idv_pct_encoded_len((const u_char *) ch, strlen(ch));
        end = ngx_http_idv_pct_encode(buf, (const u_char *) ch, strlen(ch));

        tap_ok(len == (size_t) (end - buf),
               "pct: length pass agrees with write pass for '%s'", ch);
        tap_is_str(end - buf, buf, canon, "pct: '%s' -> %s", ch, canon);
    }

    tap_ok(n == 23, "pct: all %zu rows of percent_encoding_table checked", n);

    /* every byte value: only A-Z a-z 0-9 - _ . ~ stay, upper-case hex */

    bad = 0;

    for (c = 0; c < 256; c++) {
        buf[0] = (u_char) c;

        len = ngx_http_idv_pct_encoded_len(buf, 1);
        end = ngx_http_idv_pct_encode(buf + 1, buf, 1);

        if (len != (size_t) test_canonical_byte(c, exp)
            || (size_t) (end - buf - 1) != len
            || memcmp(buf + 1, exp, len) != 0)
        {
            printf("#   byte 0x%02x: got '%.*s' expected '%s'\n",
                   c, (int) (end - buf - 1), buf + 1, exp);
            bad++;
        }
    }

    tap_ok(bad == 0, "pct: all 256 byte values encode canonically");

    tap_ok(ngx_http_idv_pct_encoded_len(NULL, 0) == 0
           && ngx_http_idv_pct_encode(buf, NULL, 0) == buf,
           "pct: empty input");

    test_percent_encoding_long();
}


/*
 * Values longer than a block, with several reserved bytes to a block (the
 * block pass escapes them all from one classification) and reserved bytes
 * near the end (the byte loop finishes): each against the byte-wise
 * reference, and nothing written past the output's end.  The same values
 * mapped into the base64 alphabet go through the base64 encoder too.
 */

static size_t
test_pct_against(u_char *(*encode)(u_char *, const u_char *, size_t),
    const u_char *src, size_t len, const char *what)
{
    int      c;
    char     exp[4];
    size_t   i, want;
    u_char   out[3 * 300 + 16], ref[3 * 300], *end;

    want = 0;

    for (i = 0; i < len; i++) {
        c = test_canonical_byte(src[i], exp);
        memcpy(ref + want, exp, c);
        want += c;
    }

    memset(out, 0xa5, sizeof(out));
    end = encode(out, src, len);

    if ((size_t) (end - out) != want || memcmp(out, ref, want) != 0
        || ngx_http_idv_pct_encoded_len(src, len) != want)
    {
        printf("#   %s, length %zu: wrong encoding\n", what, len);
        return 1;
    }

    for (i = want; i < sizeof(out); i++) {
        if (out[i] != 0xa5) {
            printf("#   %s, length %zu: byte %zu written past the output\n",
                   what, len, i);
            return 1;
        }
    }

    return 0;
}


static void
test_percent_encoding_long(void)
{
    size_t         i, len, n, k, bad, bad64;
    u_char         src[300];
    unsigned int   seed;

    /* the base64 alphabet, '=' and a few bytes from outside it */

    static const char  alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        "+/=+/=+/=%& ~-._\x80\xff";

    seed = 17;
    bad = 0;
    bad64 = 0;
    n = 0;

    for (len = 0; len <= 300; len++) {
        for (k = 0; k < 8; k++) {
            for (i = 0; i < len; i++) {
                seed = seed * 1103515245 + 12345;

                /* k: how dense the reserved bytes are (0 none, 7 all) */

                if (k == 0) {
                    src[i] = 'A' + (seed >> 16) % 26;

                } else if (k == 7) {
                    src[i] = "+/=&"[(seed >> 16) % 4];

                } else if ((seed >> 16) % (1 << (7 - k)) == 0) {
                    src[i] = "+/="[(seed >> 8) % 3];

                } else {
                    src[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
                }
            }

            bad += test_pct_against(ngx_http_idv_pct_encode, src, len,
                                    "any bytes");

            /* into the base64 alphabet: what is not in it becomes '/' */

            for (i = 0; i < len; i++) {
                if (strchr("%& ~-._&", src[i]) != NULL || src[i] >= 0x80) {
                    src[i] = '/';
                }
            }

            bad64 += test_pct_against(ngx_http_idv_pct_encode_base64, src,
                                      len, "base64");
            n++;
        }
    }

    tap_ok(bad == 0, "pct: %zu long values (0 to 300 bytes, 8 densities of "
           "reserved bytes) encode as byte by byte", n);
    tap_ok(bad64 == 0, "pct: %zu long base64 values: the base64 encoder "
           "writes what the byte-wise reference writes", n);
}


static void
test_base64(void)
{
    size_t        i, n, len;
    u_char        src[70], enc[100], dec[100];
    unsigned int  seed;

    static const char  *rfc[][2] = {
        { "", "" },
        { "f", "Zg==" },
        { "fo", "Zm8=" },
        { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" },
        { "fooba", "Zm9vYmE=" },
        { "foobar", "Zm9vYmFy" }
    };

    static const char  *unpadded[][2] = {
        { "f", "Zg" },
        { "fo", "Zm8" },
        { "foob", "Zm9vYg" },
        { "fooba", "Zm9vYmE" }
    };

    static const char  *rejects[][2] = {
        { "Z", "one symbol cannot hold a byte" },
        { "Zm9vY", "one symbol after a full quantum" },
        { "Zg=", "incomplete padding" },
        { "Zg===", "too much padding" },
        { "Z===", "padding for a single symbol" },
        { "====", "padding only" },
        { "=", "a lone pad" },
        { "Zm=v", "padding inside a quantum" },
        { "Zg==Zg==", "padding before the end" },
        { "Zm9v!", "'!' outside the alphabet" },
        { "Zm9v ", "a trailing space" },
        { "Zm9v\n", "a trailing newline" },
        { "Zm 9v", "an inner space" },
        { "Zm-_", "the URL-safe alphabet" },
        { "Zm9v\x80", "a non-ASCII byte" },
        { "Zh==", "non-zero unused bits after one byte" },
        { "Zm9=", "non-zero unused bits after two bytes" }
    };

    for (i = 0; i < sizeof(rfc) / sizeof(rfc[0]); i++) {
        len = strlen(rfc[i][0]);

        n = ngx_http_idv_base64_encode(enc, (const u_char *) rfc[i][0], len);
        tap_is_str(n, enc, rfc[i][1], "base64: encode \"%s\"", rfc[i][0]);

        n = ngx_http_idv_base64_decode(dec, (const u_char *) rfc[i][1],
                                       strlen(rfc[i][1]));
        tap_ok(n != (size_t) -1, "base64: decode \"%s\" accepted", rfc[i][1]);

        if (n != (size_t) -1) {
            tap_is_str(n, dec, rfc[i][0], "base64: decode \"%s\"", rfc[i][1]);
        }
    }

    for (i = 0; i < sizeof(unpadded) / sizeof(unpadded[0]); i++) {
        n = ngx_http_idv_base64_decode(dec, (const u_char *) unpadded[i][1],
                                       strlen(unpadded[i][1]));
        tap_ok(n != (size_t) -1 && n == strlen(unpadded[i][0])
               && memcmp(dec, unpadded[i][0], n) == 0,
               "base64: unpadded \"%s\" decodes", unpadded[i][1]);
    }

    for (i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++) {
        n = ngx_http_idv_base64_decode(dec, (const u_char *) rejects[i][0],
                                       strlen(rejects[i][0]));
        tap_ok(n == (size_t) -1, "base64: rejects %s", rejects[i][1]);
    }

    /* round trips of every length through 3 full quanta and beyond */

    seed = 12345;
    n = 0;

    for (len = 0; len <= sizeof(src); len++) {
        for (i = 0; i < len; i++) {
            seed = seed * 1103515245 + 12345;
            src[i] = (u_char) (seed >> 16);
        }

        i = ngx_http_idv_base64_encode(enc, src, len);

        if (i != (len + 2) / 3 * 4
            || ngx_http_idv_base64_decode(dec, enc, i) != len
            || memcmp(dec, src, len) != 0)
        {
            printf("#   round trip failed at length %zu\n", len);
            n++;
        }
    }

    tap_ok(n == 0, "base64: round trips for lengths 0..%zu", sizeof(src));
}


static void
test_digests(void)
{
    u_char  hex[64], mac[32], out[64];

    tap_ok(ngx_http_idv_sha256_hex((const u_char *) "", 0, hex) == 0,
           "sha256(\"\") succeeds");
    tap_is_str(64, hex,
               "e3b0c44298fc1c149afbf4c8996fb924"
               "27ae41e4649b934ca495991b7852b855", "sha256(\"\")");

    ngx_http_idv_sha256_hex((const u_char *) "abc", 3, hex);
    tap_is_str(64, hex,
               "ba7816bf8f01cfea414140de5dae2223"
               "b00361a396177a9cb410ff61f20015ad", "sha256(\"abc\")");

    /* RFC 4231 test case 2, RFC 2202 test case 2 */

    tap_ok(ngx_http_idv_hmac_sha256((const u_char *) "Jefe", 4,
               (const u_char *) "what do ya want for nothing?", 28, mac) == 0,
           "hmac_sha256 succeeds");
    tap_is_str(ngx_http_idv_hex(out, mac, 32) - out, out,
               "5bdcc146bf60754e6a042426089575c7"
               "5a003f089d2739839dec58b964ec3843", "hmac_sha256 RFC 4231 #2");

    tap_ok(ngx_http_idv_hmac_sha1((const u_char *) "Jefe", 4,
               (const u_char *) "what do ya want for nothing?", 28, mac) == 0,
           "hmac_sha1 succeeds");
    tap_is_str(ngx_http_idv_hex(out, mac, 20) - out, out,
               "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
               "hmac_sha1 RFC 2202 #2");

    /* keys are per call: an empty key is not the previous key */

    ngx_http_idv_hmac_sha256(NULL, 0, (const u_char *) "", 0, mac);
    tap_is_str(ngx_http_idv_hex(out, mac, 32) - out, out,
               "b613679a0814d9ec772f95d778c35fc5"
               "ff1697c493715653c6c712144292c5ad",
               "hmac_sha256 with an empty (NULL) key");
}


static void
test_memeq(void)
{
    tap_ok(ngx_http_idv_memeq_const((const u_char *) "abcd",
                                    (const u_char *) "abcd", 4) == 1,
           "memeq_const: equal");
    tap_ok(ngx_http_idv_memeq_const((const u_char *) "abcd",
                                    (const u_char *) "abce", 4) == 0,
           "memeq_const: last byte differs");
    tap_ok(ngx_http_idv_memeq_const((const u_char *) "xbcd",
                                    (const u_char *) "abcd", 4) == 0,
           "memeq_const: first byte differs");
    tap_ok(ngx_http_idv_memeq_const(NULL, NULL, 0) == 1,
           "memeq_const: empty");
}


static void
test_sort(void)
{
    size_t                i;
    char                  got[256], *p;
    ngx_http_idv_param_t  params[8];

    static const char  *keys[] = {
        "a", "a", "b", "MerchantBizId", "MRTDInput", "B", "a", "ab"
    };

    memset(params, 0, sizeof(params));

    for (i = 0; i < 8; i++) {
        params[i].key = test_str(keys[i]);
        params[i].value.len = 1;
        params[i].value.data = (u_char *) "01234567" + i;
    }

    ngx_http_idv_params_sort(params, 8);

    p = got;

    for (i = 0; i < 8; i++) {
        p += sprintf(p, "%s%.*s=%c", i ? "&" : "",
                     (int) params[i].key.len, params[i].key.data,
                     params[i].value.data[0]);
    }

    tap_is_str(p - got, got, "B=5&MRTDInput=4&MerchantBizId=3&a=0&a=1&a=6"
               "&ab=7&b=2", "params_sort: byte order, stable for equal keys");

    ngx_http_idv_params_sort(NULL, 0);
    tap_ok(1, "params_sort: empty array");
}


static void
test_init(const cJSON *vectors)
{
    const char           *exp;
    const cJSON          *v;
    test_pool_t           pool;
    ngx_http_idv_sign_t   s;

    tap_ok(ngx_http_idv_sign_init() == 0, "sign_init: first call");
    tap_ok(ngx_http_idv_sign_init() == 0, "sign_init: second call harmless");

    ngx_http_idv_sign_cleanup();
    ngx_http_idv_sign_cleanup();
    tap_ok(1, "sign_cleanup: twice harmless");

    tap_ok(ngx_http_idv_sign_init() == 0, "sign_init: after cleanup");
    tap_ok(ngx_http_idv_sign_init() == 0, "sign_init: again");

    cJSON_ArrayForEach(v, vectors) {
        memset(&pool, 0, sizeof(test_pool_t));

        if (test_setup(&s, v, &pool) != 0) {
            tap_ok(0, "inputs are usable");
            continue;
        }

        exp = test_get(v, s.algorithm == NGX_HTTP_IDV_SIGN_V1
                          ? "v1.signature" : "v3_minimal_headers.signature");

        tap_ok(ngx_http_idv_sign(&s) == 0, "%s: signs after re-init",
               test_get(v, "id"));
        tap_is_str(s.signature.len, s.signature.data, exp ? exp : "",
                   "%s: same signature after re-init", test_get(v, "id"));

        free(s.params);
        test_pool_free(&pool);
    }
}


static char *
test_read(const char *arg)
{
    long         size;
    char        *path, *buf;
    FILE        *f;
    size_t       len;
    struct stat  st;

    len = strlen(arg);

    path = malloc(len + sizeof("/" TEST_VECTORS_FILE));
    if (path == NULL) {
        return NULL;
    }

    memcpy(path, arg, len + 1);

    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        strcpy(path + len, "/" TEST_VECTORS_FILE);
    }

    f = fopen(path, "rb");
    if (f == NULL) {
        printf("# cannot open %s\n", path);
        free(path);
        return NULL;
    }

    free(path);

    buf = NULL;

    if (fseek(f, 0, SEEK_END) == 0
        && (size = ftell(f)) > 0
        && fseek(f, 0, SEEK_SET) == 0
        && (buf = malloc(size + 1)) != NULL)
    {
        if (fread(buf, 1, size, f) != (size_t) size) {
            free(buf);
            buf = NULL;

        } else {
            buf[size] = '\0';
        }
    }

    fclose(f);

    return buf;
}


int
main(int argc, char **argv)
{
    int           nv;
    char         *json;
    const char   *arg;
    cJSON        *root;
    const cJSON  *vectors, *v;

    arg = argc > 1 ? argv[1] : getenv("IDV_TEST_DATA");
    if (arg == NULL || *arg == '\0') {
        arg = "t/data";
    }

    json = test_read(arg);
    root = json ? cJSON_Parse(json) : NULL;
    free(json);

    tap_ok(root != NULL, "signature-vectors.json loads from %s", arg);

    if (root == NULL) {
        return tap_done();
    }

    vectors = cJSON_GetObjectItemCaseSensitive(root, "vectors");

    nv = cJSON_GetArraySize(vectors);
    tap_ok(nv == 14, "14 vectors (found %d)", nv);

    tap_ok(ngx_http_idv_sign_init() == 0, "sign_init");

    cJSON_ArrayForEach(v, vectors) {
        test_vector(v);
    }

    test_form_implied(vectors);
    test_security_token(vectors);
    test_alloc_failure(vectors);
    test_percent_encoding(root);
    test_base64();
    test_digests();
    test_memeq();
    test_sort();
    test_init(vectors);

    ngx_http_idv_sign_cleanup();
    cJSON_Delete(root);

    return tap_done();
}
