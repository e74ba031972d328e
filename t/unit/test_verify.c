/*
 * Unit tests of the verifier of incoming SDK requests
 * (ngx_http_idv_verify.c): every request the official SDK put on the wire
 * in t/data/signature-vectors.json verifies with its secret and fails with
 * another one or with one byte changed; the service's codes for
 * incomplete, malformed and stale requests; timestamps; allocation
 * failures.
 *
 * usage: test_verify [t/data | path/to/signature-vectors.json]
 *        (or IDV_TEST_DATA=dir); TAP on stdout.
 */


#define _GNU_SOURCE                 /* memmem() */

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "ngx_http_idv_verify.h"
#include "tap.h"


#define TEST_VECTORS_FILE   "signature-vectors.json"
#define TEST_SM3_FILE       "sm3-vectors.json"
#define TEST_SECRET         "testsecret"
#define TEST_MAX_HEADERS    32


#include "test_pool.h"


/* one request as it came over the wire */

typedef struct {
    const char                 *id;
    char                        method[8];
    char                       *path;
    char                       *query;
    char                       *body;
    size_t                      body_len;
    ngx_http_idv_header_t       headers[TEST_MAX_HEADERS];
    size_t                      nheaders;
    unsigned                    form:1;
} test_wire_t;


static char *
test_strdup(const char *s)
{
    size_t   len;
    char    *d;

    len = strlen(s);

    d = malloc(len + 1);
    if (d != NULL) {
        memcpy(d, s, len + 1);
    }

    return d;
}


static char *
test_lower(const char *s)
{
    char  *d, *p;

    d = test_strdup(s);

    for (p = d; p && *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            *p |= 0x20;
        }
    }

    return d;
}


static const char *
test_get(const cJSON *obj, const char *name)
{
    obj = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsString(obj) ? obj->valuestring : NULL;
}


static void
test_wire_free(test_wire_t *w)
{
    size_t  i;

    free(w->path);
    free(w->query);
    free(w->body);

    for (i = 0; i < w->nheaders; i++) {
        free(w->headers[i].name.data);
        free(w->headers[i].value.data);
    }

    memset(w, 0, sizeof(test_wire_t));
}


static int
test_add_header(test_wire_t *w, const char *name, const char *value)
{
    if (w->nheaders == TEST_MAX_HEADERS) {
        return -1;
    }

    w->headers[w->nheaders].name = test_str(test_lower(name));
    w->headers[w->nheaders].value = test_str(test_strdup(value));
    w->nheaders++;

    return 0;
}


/* a header's value, or NULL */

static ngx_http_idv_header_t *
test_header(test_wire_t *w, const char *name)
{
    size_t  i;

    for (i = 0; i < w->nheaders; i++) {
        if (w->headers[i].name.len == strlen(name)
            && memcmp(w->headers[i].name.data, name, strlen(name)) == 0)
        {
            return &w->headers[i];
        }
    }

    return NULL;
}


static void
test_set_header(test_wire_t *w, const char *name, const char *value)
{
    ngx_http_idv_header_t  *h;

    h = test_header(w, name);

    if (h == NULL) {
        (void) test_add_header(w, name, value);
        return;
    }

    free(h->value.data);
    h->value = test_str(test_strdup(value));
}


/* the wire request of a vector, with the headers it was sent with */

static int
test_wire(test_wire_t *w, const cJSON *vec, const cJSON *headers)
{
    const char   *target, *body, *q, *ct;
    const cJSON  *wire, *h, *name, *value;

    memset(w, 0, sizeof(test_wire_t));

    w->id = test_get(vec, "id");
    wire = cJSON_GetObjectItemCaseSensitive(vec, "wire");

    target = test_get(wire, "request_target");
    body = test_get(wire, "body");

    if (w->id == NULL || target == NULL || body == NULL) {
        return -1;
    }

    strcpy(w->method, "POST");

    q = strchr(target, '?');

    w->path = test_strdup(target);
    w->path[q ? (size_t) (q - target) : strlen(target)] = '\0';
    w->query = test_strdup(q ? q + 1 : "");
    w->body = test_strdup(body);
    w->body_len = strlen(body);

    if (headers == NULL) {
        headers = cJSON_GetObjectItemCaseSensitive(wire, "headers_in_order");

        cJSON_ArrayForEach(h, headers) {
            name = cJSON_GetArrayItem(h, 0);
            value = cJSON_GetArrayItem(h, 1);

            if (!cJSON_IsString(name) || !cJSON_IsString(value)
                || test_add_header(w, name->valuestring, value->valuestring)
                   != 0)
            {
                return -1;
            }
        }

    } else {
        cJSON_ArrayForEach(h, headers) {
            if (!cJSON_IsString(h)
                || test_add_header(w, h->string, h->valuestring) != 0)
            {
                return -1;
            }
        }
    }

    ct = NULL;

    if (test_header(w, "content-type")) {
        ct = (const char *) test_header(w, "content-type")->value.data;
    }

    w->form = (ct && strncmp(ct, "application/x-www-form-urlencoded", 33)
                     == 0);

    return 0;
}


static void
test_init(ngx_http_idv_verify_t *v, test_wire_t *w, test_pool_t *pool)
{
    memset(v, 0, sizeof(ngx_http_idv_verify_t));

    v->method = test_str(w->method);
    v->path = test_str(w->path);
    v->query = test_str(w->query);
    v->body.data = (u_char *) w->body;
    v->body.len = w->body_len;
    v->headers = w->headers;
    v->nheaders = w->nheaders;
    v->form = w->form;
    v->alloc = test_alloc;
    v->alloc_data = pool;
}


/* parse + signature with a secret: 0, or -1 with v->code set */

static int
test_check(test_wire_t *w, const char *secret, ngx_http_idv_verify_t *v,
    test_pool_t *pool)
{
    test_init(v, w, pool);

    if (ngx_http_idv_verify_parse(v) != 0) {
        return -1;
    }

    return ngx_http_idv_verify_signature(v, (u_char *) secret,
                                         strlen(secret));
}


static int
test_code_is(ngx_http_idv_verify_t *v, const char *code)
{
    return v->code != NULL && strcmp(v->code, code) == 0;
}


/*
 * change one alphanumeric character after the first '=' found, one that
 * is not part of a %XX escape
 */

static int
test_flip(char *s)
{
    char  *p;

    p = strchr(s, '=');

    while (p && *p) {
        p++;

        if (p[-1] == '%' || (p - s >= 2 && p[-2] == '%')) {
            continue;
        }

        if ((*p >= 'a' && *p <= 'y') || (*p >= 'A' && *p <= 'Y')
            || (*p >= '0' && *p <= '8'))
        {
            (*p)++;
            return 0;
        }
    }

    return -1;
}


static char *test_read(const char *path);


/*
 * ACS3-HMAC-SM3 as the official SDK core sends it (t/sdk/gen-sm3-vector.js):
 * it verifies with its secret, its string to sign names SM3, and a byte
 * changed in the body, a wrong secret or the SHA-256 name refuse it
 */

static void
test_sm3(const char *path)
{
    int                     rc;
    char                   *json, *saved;
    cJSON                  *root, *vec;
    test_wire_t             w;
    test_pool_t             pool;
    ngx_http_idv_header_t  *auth;
    ngx_http_idv_verify_t   v;

    json = test_read(path);
    root = json ? cJSON_Parse(json) : NULL;
    vec = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root,
                                                              "vectors"), 0);

    tap_ok(vec != NULL, "SM3 vector readable from %s", path);

    if (vec == NULL || test_wire(&w, vec, NULL) != 0) {
        cJSON_Delete(root);
        free(json);
        return;
    }

    memset(&pool, 0, sizeof(test_pool_t));

    rc = test_check(&w, TEST_SECRET, &v, &pool);
    tap_ok(rc == 0 && v.sm3, "%s: verifies with the secret (%s)", w.id,
           rc == 0 ? "ok" : v.code);
    tap_ok(v.string_to_sign.len == sizeof("ACS3-HMAC-SM3\n") - 1 + 64
           && memcmp(v.string_to_sign.data, "ACS3-HMAC-SM3\n", 14) == 0,
           "%s: the string to sign names ACS3-HMAC-SM3", w.id);

    rc = test_check(&w, "testsecreT", &v, &pool);
    tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
           "%s: a wrong secret is SignatureDoesNotMatch", w.id);

    w.body[w.body_len - 2] ^= 0x01;
    rc = test_check(&w, TEST_SECRET, &v, &pool);
    tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
           "%s: a changed body byte is SignatureDoesNotMatch", w.id);
    w.body[w.body_len - 2] ^= 0x01;

    /* "ACS3-HMAC-SM3 Credential=..." -> "ACS3-HMAC-SHA256 Credential=..." */

    auth = test_header(&w, "authorization");
    saved = malloc(auth->value.len + 4);

    if (saved != NULL) {
        sprintf(saved, "ACS3-HMAC-SHA256%s", (const char *) auth->value.data
                                             + sizeof("ACS3-HMAC-SM3") - 1);
        test_set_header(&w, "authorization", saved);
    }

    rc = test_check(&w, TEST_SECRET, &v, &pool);
    tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
           "%s: its signature under the SHA-256 name does not match", w.id);

    free(saved);
    test_wire_free(&w);
    test_pool_free(&pool);
    cJSON_Delete(root);
    free(json);
}


static void
test_vector(const cJSON *vec)
{
    int                     v3, rc;
    char                    id[96], *saved;
    time_t                  t;
    test_wire_t             w;
    test_pool_t             pool;
    const char             *exp;
    const cJSON            *min;
    ngx_http_idv_header_t  *auth;
    ngx_http_idv_verify_t   v;

    memset(&pool, 0, sizeof(test_pool_t));

    if (test_wire(&w, vec, NULL) != 0) {
        tap_ok(0, "vector readable");
        test_wire_free(&w);
        return;
    }

    snprintf(id, sizeof(id), "%s", w.id);
    v3 = (strncmp(id, "v3-", 3) == 0);

    /* the SDK's request verifies with its secret */

    rc = test_check(&w, TEST_SECRET, &v, &pool);

    tap_ok(rc == 0, "%s: verifies with the secret (%s)", id,
           v.code ? v.code : "ok");
    tap_ok(v.algorithm == (v3 ? NGX_HTTP_IDV_SIGN_V3 : NGX_HTTP_IDV_SIGN_V1),
           "%s: signature version recognised", id);
    tap_is_str(v.access_key_id.len, v.access_key_id.data, "testid",
               "%s: AccessKeyId", id);
    tap_is_str(v.action.len, v.action.data,
               test_get(cJSON_GetObjectItem(vec, "inputs"), "action"),
               "%s: action", id);
    tap_is_str(v.version.len, v.version.data, "2022-08-09",
               "%s: version", id);
    tap_is_str(v.nonce.len, v.nonce.data,
               test_get(cJSON_GetObjectItem(vec, "inputs"), "nonce"),
               "%s: nonce", id);

    exp = test_get(cJSON_GetObjectItem(vec, v3 ? "v3" : "v1"),
                   "string_to_sign");

    if (exp) {
        tap_is_str(v.string_to_sign.len, v.string_to_sign.data, exp,
                   "%s: the SDK's string to sign", id);
    }

    /* decoded parameters: the form body's are flagged */

    if (strstr(id, "ekycverify")) {
        size_t  i, body;

        body = 0;

        for (i = 0; i < v.nparams; i++) {
            body += v.params[i].body;
        }

        tap_ok(body == 2, "%s: two body parameters", id);
    }

    /* time window */

    ngx_http_idv_parse_time((u_char *) "2024-05-20T08:30:00Z", 20, &t);

    tap_ok(ngx_http_idv_verify_time(&v, t + 14 * 60,
                                    NGX_HTTP_IDV_VERIFY_WINDOW) == 0,
           "%s: 14 minutes later is inside the window", id);
    tap_ok(ngx_http_idv_verify_time(&v, t + 16 * 60,
                                    NGX_HTTP_IDV_VERIFY_WINDOW) != 0
           && test_code_is(&v, "InvalidTimeStamp.Expired")
           && v.status == 400,
           "%s: 16 minutes later is InvalidTimeStamp.Expired", id);
    tap_ok(ngx_http_idv_verify_time(&v, t - 16 * 60,
                                    NGX_HTTP_IDV_VERIFY_WINDOW) != 0
           && test_code_is(&v, "InvalidTimeStamp.Expired"),
           "%s: 16 minutes early is InvalidTimeStamp.Expired", id);

    /* another secret */

    rc = test_check(&w, "testsecreT", &v, &pool);

    tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch")
           && v.status == 400,
           "%s: another secret is SignatureDoesNotMatch", id);

    if (v3) {
        tap_ok(v.message.len > 0
               && memmem(v.message.data, v.message.len,
                         "server StringToSign is [ACS3-HMAC-SHA256\n", 41)
                  != NULL,
               "%s: V3 echoes the (digest) string to sign", id);

    } else {
        tap_ok(memmem(v.message.data, v.message.len, "MerchantBizId", 13)
               == NULL
               && memmem(v.message.data, v.message.len, "testid", 6) == NULL,
               "%s: V1 does not echo the parameters", id);
    }

    rc = test_check(&w, "", &v, &pool);
    tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
           "%s: an empty secret does not match", id);

    /* one byte of the query changed */

    saved = test_strdup(w.query);
    tap_ok(test_flip(w.query) == 0, "%s: a query byte to flip", id);

    rc = test_check(&w, TEST_SECRET, &v, &pool);
    tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
           "%s: a changed query is SignatureDoesNotMatch (%s)", id,
           v.code ? v.code : "ok");

    free(w.query);
    w.query = saved;

    /* one byte of the body changed */

    if (w.body_len) {
        saved = test_strdup(w.body);
        tap_ok(test_flip(w.body + w.body_len / 2) == 0,
               "%s: a body byte to flip", id);

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
               "%s: a changed body is SignatureDoesNotMatch (%s)", id,
               v.code ? v.code : "ok");

        free(w.body);
        w.body = saved;
    }

    /* a trailing empty parameter is still a different request */

    if (w.body_len == 0 && w.form) {
        saved = w.body;
        w.body = test_strdup("X=");
        w.body_len = 2;

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
               "%s: a body added to an empty one does not match", id);

        free(w.body);
        w.body = saved;
        w.body_len = 0;
    }

    if (v3) {
        /* a signed header changed */

        test_set_header(&w, "x-acs-date", "2024-05-20T08:30:01Z");
        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
               "%s: a changed x-acs-date is SignatureDoesNotMatch", id);
        test_set_header(&w, "x-acs-date", "2024-05-20T08:30:00Z");

        /* the body hash claimed must be the body's */

        saved = test_strdup((char *)
                            test_header(&w, "x-acs-content-sha256")
                                ->value.data);
        test_set_header(&w, "x-acs-content-sha256",
                        "0000000000000000000000000000000000000000000000000000"
                        "000000000000");
        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
               "%s: a wrong x-acs-content-sha256 does not match", id);
        test_set_header(&w, "x-acs-content-sha256", saved);
        free(saved);

        /* unsigned headers do not matter; repeated ones are joined */

        test_set_header(&w, "user-agent", "something else");
        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc == 0, "%s: an unsigned header may change", id);

        (void) test_add_header(&w, "x-acs-action", "CheckResult");
        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
               "%s: a second x-acs-action header does not match", id);
        w.nheaders--;
        free(w.headers[w.nheaders].name.data);
        free(w.headers[w.nheaders].value.data);

        /* a header dropped from SignedHeaders */

        auth = test_header(&w, "authorization");
        saved = test_strdup((char *) auth->value.data);
        {
            char  *p, *buf;

            buf = test_strdup(saved);
            p = strstr(buf, "host;");
            memmove(p, p + 5, strlen(p + 5) + 1);
            test_set_header(&w, "authorization", buf);
            free(buf);
        }

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "IncompleteSignature")
               && v.status == 400,
               "%s: host not signed is IncompleteSignature", id);

        if (w.form) {
            char  *p, *buf;

            buf = test_strdup(saved);
            p = strstr(buf, "content-type;");
            memmove(p, p + 13, strlen(p + 13) + 1);
            test_set_header(&w, "authorization", buf);
            free(buf);

            rc = test_check(&w, TEST_SECRET, &v, &pool);
            tap_ok(rc != 0 && test_code_is(&v, "IncompleteSignature"),
                   "%s: content-type sent but not signed is "
                   "IncompleteSignature", id);
        }

        test_set_header(&w, "authorization", "ACS3-HMAC-SHA256 "
                        "Credential=testid,Signature=00");
        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "IncompleteSignature"),
               "%s: no SignedHeaders is IncompleteSignature", id);

        {
            char  *buf;

            buf = test_strdup(saved);
            memcpy(buf + 10, "SM3", 3);   /* ACS3-HMAC-SM3256 ... */
            test_set_header(&w, "authorization", buf);
            free(buf);
        }

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "InvalidSignatureMethod"),
               "%s: another algorithm is InvalidSignatureMethod", id);

        /* upper-case names in SignedHeaders are the same names */

        {
            char  *p, *buf;

            buf = test_strdup(saved);
            p = strstr(buf, "host;");
            memcpy(p, "HOST", 4);
            test_set_header(&w, "authorization", buf);
            free(buf);
        }

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc == 0, "%s: SignedHeaders names are case-insensitive", id);

        test_set_header(&w, "authorization", saved);
        free(saved);

        /* the minimal header set a non-SDK client sends */

        min = cJSON_GetObjectItemCaseSensitive(vec, "v3_minimal_headers");
        exp = test_get(min, "authorization");

        if (exp) {
            test_wire_free(&w);

            if (test_wire(&w, vec, cJSON_GetObjectItem(min, "headers")) != 0
                || test_add_header(&w, "authorization", exp) != 0)
            {
                tap_ok(0, "%s: minimal headers readable", id);

            } else {
                rc = test_check(&w, TEST_SECRET, &v, &pool);
                tap_ok(rc == 0, "%s: minimal header set verifies (%s)", id,
                       v.code ? v.code : "ok");
                tap_is_str(v.string_to_sign.len, v.string_to_sign.data,
                           test_get(min, "string_to_sign"),
                           "%s: minimal header set string to sign", id);
            }
        }

    } else {
        /* V1: the signature parameters are signed too */

        saved = test_strdup(w.query);

        {
            char  *p;

            p = strstr(w.query, "SignatureNonce=");
            p[15] = (p[15] == 'f') ? 'e' : 'f';
        }

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "SignatureDoesNotMatch"),
               "%s: a changed SignatureNonce does not match", id);

        strcpy(w.query, saved);

        {
            char  *p;

            p = strstr(w.query, "HMAC-SHA1");
            memcpy(p, "HMAC-SHA2", 9);
        }

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "InvalidSignatureMethod"),
               "%s: SignatureMethod other than HMAC-SHA1", id);

        strcpy(w.query, saved);

        {
            char  *p;

            p = strstr(w.query, "&Timestamp=");
            memcpy(p + 1, "Timestamq", 9);
        }

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "MissingTimestamp")
               && v.status == 400,
               "%s: no Timestamp is MissingTimestamp", id);

        strcpy(w.query, saved);

        {
            char  *p;

            p = strstr(w.query, "&AccessKeyId=");
            memcpy(p + 1, "AccessKeyIx", 11);
        }

        rc = test_check(&w, TEST_SECRET, &v, &pool);
        tap_ok(rc != 0 && test_code_is(&v, "MissingAccessKeyId"),
               "%s: no AccessKeyId is MissingAccessKeyId", id);

        free(w.query);
        w.query = saved;

        /* the Signature may come in the body as well */

        if (w.form) {
            char    *p, *sig, *body;
            size_t   n;

            p = strstr(w.query, "&Signature=");
            sig = test_strdup(p + 1);
            *p = '\0';

            n = strlen(sig) + 1 + w.body_len + 1;
            body = malloc(n);
            snprintf(body, n, "%s%s%s", w.body, w.body_len ? "&" : "", sig);
            free(w.body);
            free(sig);
            w.body = body;
            w.body_len = strlen(body);

            rc = test_check(&w, TEST_SECRET, &v, &pool);
            tap_ok(rc == 0, "%s: Signature in the form body (%s)", id,
                   v.code ? v.code : "ok");
        }
    }

    test_wire_free(&w);
    test_pool_free(&pool);
}


/* requests crafted here: decoding, duplicates, limits, missing parts */

static void
test_crafted(void)
{
    char                   *big, *p;
    size_t                  i;
    test_wire_t             w;
    test_pool_t             pool;
    ngx_http_idv_verify_t   v;

    memset(&pool, 0, sizeof(test_pool_t));
    memset(&w, 0, sizeof(test_wire_t));

    strcpy(w.method, "POST");
    w.path = test_strdup("/");
    w.body = test_strdup("");

#define test_query(q)                                                        \
    free(w.query);                                                           \
    w.query = test_strdup(q);                                                \
    test_init(&v, &w, &pool)

    test_query("A=b+c%20d&E=%2B&Signature=x");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "MissingAccessKeyId"),
           "crafted: V1 without AccessKeyId");
    tap_ok(v.nparams == 3, "crafted: three parameters decoded");
    tap_is_str(v.params[0].value.len, v.params[0].value.data, "b c d",
               "crafted: '+' and %%20 decode to spaces");
    tap_is_str(v.params[1].value.len, v.params[1].value.data, "+",
               "crafted: %%2B decodes to '+'");

    test_query("A=1&B=2");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "MissingSignature") && v.status == 400,
           "crafted: no signature at all is MissingSignature");

    test_query("A=1&A=2&Signature=x");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidParameter"),
           "crafted: a duplicate parameter is InvalidParameter");

    test_query("A=%zz&Signature=x");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidParameter"),
           "crafted: a malformed escape is InvalidParameter");

    test_query("%zz=abc&Signature=x");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidParameter"),
           "crafted: a malformed escape in a name is InvalidParameter");

    test_query("A=%4");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidParameter"),
           "crafted: a truncated escape is InvalidParameter");

    test_query("=x&Signature=y");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidParameter"),
           "crafted: a parameter without a name");

    test_query("&&Flag&Signature=y&&");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0 && v.nparams == 2
           && v.params[0].value.len == 0,
           "crafted: empty segments skipped, a bare name is empty");

    test_query("AccessKeyId=a&Signature=s&Timestamp=t&SignatureNonce=n"
               "&Action=CheckResult&Version=2022-08-09"
               "&SignatureMethod=HMAC-SHA1&SignatureVersion=2.0");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidSignatureVersion"),
           "crafted: SignatureVersion 2.0 is InvalidSignatureVersion");

    test_query("AccessKeyId=a&Signature=s&Timestamp=t&SignatureNonce=n"
               "&Action=CheckResult&Version=2022-08-09"
               "&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0");
    tap_ok(ngx_http_idv_verify_parse(&v) == 0
           && v.algorithm == NGX_HTTP_IDV_SIGN_V1,
           "crafted: a complete V1 request parses");
    tap_ok(ngx_http_idv_verify_time(&v, 0, 900) != 0
           && test_code_is(&v, "InvalidTimeStamp.Format"),
           "crafted: a malformed Timestamp is InvalidTimeStamp.Format");
    tap_ok(ngx_http_idv_verify_signature(&v, (u_char *) "s", 1) != 0
           && test_code_is(&v, "SignatureDoesNotMatch"),
           "crafted: a short signature does not match");

    /* too many parameters: refused before any sort */

    big = malloc(8 * 1000 + 1);
    p = big;

    for (i = 0; i < 1000; i++) {
        p += sprintf(p, "k%03u=v&", (unsigned) i);
    }

    *p = '\0';

    test_query(big);
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidParameter"),
           "crafted: 1000 parameters are refused");

    free(w.query);
    w.query = test_strdup("");
    free(w.body);
    w.body = big;
    w.body_len = strlen(big);
    w.form = 1;
    test_init(&v, &w, &pool);
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "InvalidParameter"),
           "crafted: 1000 form body parameters are refused");

    w.form = 0;
    test_query("Signature=x");
    tap_ok(ngx_http_idv_verify_parse(&v) != 0 && v.nparams == 1,
           "crafted: a body that is not a form is not parsed");

    free(w.body);
    w.body = test_strdup("");
    w.body_len = 0;

    /* V3 header checks */

    test_query("");
    (void) test_add_header(&w, "authorization", "Bearer abc");
    test_init(&v, &w, &pool);
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "MissingSignature"),
           "crafted: another Authorization scheme is MissingSignature");

    test_set_header(&w, "authorization",
                    "ACS3-HMAC-SHA256 Credential=id, SignedHeaders=host;"
                    "x-acs-action;x-acs-content-sha256;x-acs-date;"
                    "x-acs-signature-nonce;x-acs-version, Signature=ab");
    test_init(&v, &w, &pool);
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "MissingTimestamp"),
           "crafted: V3 without x-acs-date is MissingTimestamp");
    tap_is_str(v.access_key_id.len, v.access_key_id.data, "id",
               "crafted: spaces after the commas are tolerated");

    (void) test_add_header(&w, "x-acs-date", "2024-05-20T08:30:00Z");
    test_init(&v, &w, &pool);
    tap_ok(ngx_http_idv_verify_parse(&v) != 0
           && test_code_is(&v, "MissingSignatureNonce"),
           "crafted: V3 without a nonce is MissingSignatureNonce");

    (void) test_add_header(&w, "x-acs-signature-nonce", "n1");
    test_init(&v, &w, &pool);
    tap_ok(ngx_http_idv_verify_parse(&v) == 0 && v.nsigned == 6,
           "crafted: a complete V3 request parses");

#undef test_query

    test_wire_free(&w);
    test_pool_free(&pool);
}


static void
test_time(void)
{
    time_t  t;

    static const struct {
        const char  *s;
        time_t       t;
    } good[] = {
        { "1970-01-01T00:00:00Z", 0 },
        { "2024-05-20T08:30:00Z", 1716193800 },
        { "2024-05-20T08:30:00.123Z", 1716193800 },
        { "2000-02-29T23:59:59Z", 951868799 },
        { "2038-01-19T03:14:08Z", (time_t) 2147483648LL },
        { NULL, 0 }
    };

    static const char  *bad[] = {
        "", "2024-05-20T08:30:00", "2024-05-20 08:30:00Z",
        "2024-05-20T08:30:00ZZ", "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z", "2024-04-31T00:00:00Z",
        "2024-05-20T24:00:00Z", "2024-05-20T08:60:00Z",
        "1969-12-31T23:59:59Z", "2024-05-20T08:30:00.Z",
        "2024-5-20T08:30:00Z", "+024-05-20T08:30:00Z",
        "2024-05-20T08:30:00+08:00", NULL
    };

    int  i;

    for (i = 0; good[i].s; i++) {
        t = -1;
        tap_ok(ngx_http_idv_parse_time((u_char *) good[i].s,
                                       strlen(good[i].s), &t) == 0
               && t == good[i].t,
               "time: %s is %lld", good[i].s, (long long) good[i].t);
    }

    for (i = 0; bad[i]; i++) {
        tap_ok(ngx_http_idv_parse_time((u_char *) bad[i], strlen(bad[i]), &t)
               != 0,
               "time: '%s' is refused", bad[i]);
    }
}


static void
test_system(void)
{
    static const char  *sys[] = {
        "AccessKeyId", "Action", "Format", "SecurityToken", "Signature",
        "SignatureMethod", "SignatureNonce", "SignatureVersion",
        "Timestamp", "Version", NULL
    };

    static const char  *api[] = {
        "MerchantBizId", "Signatur", "SignatureX", "action", "", NULL
    };

    int  i;

    for (i = 0; sys[i]; i++) {
        tap_ok(ngx_http_idv_verify_system_param((u_char *) sys[i],
                                                strlen(sys[i])),
               "system parameter: %s", sys[i]);
    }

    for (i = 0; api[i]; i++) {
        tap_ok(!ngx_http_idv_verify_system_param((u_char *) api[i],
                                                 strlen(api[i])),
               "API parameter: '%s'", api[i]);
    }
}


/* every allocation may fail: an error, never a crash or a false match */

static void
test_nomem(const cJSON *vectors)
{
    int                     rc, ok, done;
    size_t                  fail;
    test_wire_t             w;
    test_pool_t             pool;
    const cJSON            *vec;
    ngx_http_idv_verify_t   v;

    cJSON_ArrayForEach(vec, vectors) {

        if (test_wire(&w, vec, NULL) != 0) {
            test_wire_free(&w);
            continue;
        }

        ok = 1;
        done = 0;

        for (fail = 1; fail < 64 && !done; fail++) {
            memset(&pool, 0, sizeof(test_pool_t));
            pool.fail_at = fail;

            rc = test_check(&w, TEST_SECRET, &v, &pool);

            if (rc == 0) {
                done = (pool.calls < fail);
                ok &= done;

            } else if (v.status != 500 || v.code != NULL) {
                ok = 0;
            }

            test_pool_free(&pool);
        }

        tap_ok(ok && done, "%s: allocation failures are errors",
               w.id ? w.id : "?");

        test_wire_free(&w);
    }
}


static char *
test_read(const char *path)
{
    FILE         *f;
    char         *buf;
    struct stat   st;

    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        return NULL;
    }

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    buf = malloc(st.st_size + 1);

    if (buf == NULL
        || fread(buf, 1, st.st_size, f) != (size_t) st.st_size)
    {
        free(buf);
        fclose(f);
        return NULL;
    }

    fclose(f);
    buf[st.st_size] = '\0';

    return buf;
}


int
main(int argc, char **argv)
{
    int           n;
    char         *json, path[4096];
    const char   *arg;
    cJSON        *root, *vectors, *vec;
    struct stat   st;

    arg = argc > 1 ? argv[1] : getenv("IDV_TEST_DATA");
    if (arg == NULL || *arg == '\0') {
        arg = "t/data";
    }

    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof(path), "%s/%s", arg, TEST_VECTORS_FILE);

    } else {
        snprintf(path, sizeof(path), "%s", arg);
    }

    json = test_read(path);
    root = json ? cJSON_Parse(json) : NULL;
    vectors = cJSON_GetObjectItemCaseSensitive(root, "vectors");

    tap_ok(cJSON_IsArray(vectors), "vectors readable from %s", path);

    n = 0;

    cJSON_ArrayForEach(vec, vectors) {
        test_vector(vec);
        n++;
    }

    tap_ok(n == 14, "all %d vectors tried", n);

    test_crafted();
    test_time();
    test_system();
    test_nomem(vectors);

    /* the SM3 vector lies next to the others */

    n = (int) (strrchr(path, '/') ? strrchr(path, '/') - path + 1 : 0);
    snprintf(path + n, sizeof(path) - n, "%s", TEST_SM3_FILE);
    test_sm3(path);

    cJSON_Delete(root);
    free(json);

    ngx_http_idv_sign_cleanup();

    return tap_done();
}
