
/*
 * ngx_http_idv_module: verification of incoming SDK requests (pure core).
 *
 * No nginx headers; memory only from the caller's allocator.  The
 * canonical forms are rebuilt from the decoded parameters with the
 * signer's own encoder and sort, so that the gateway accepts exactly
 * what it would itself have signed.
 */


#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_http_idv_verify.h"


typedef struct {
    const char                 *name;
    size_t                      len;
} ngx_http_idv_verify_name_t;


/*
 * A V3 algorithm: its name in Authorization and the string to sign, the
 * hash of the body and of the canonical request (lower hex, 64
 * characters for both) and the HMAC (32 bytes for both).  SM3 sends the
 * body's hash in x-acs-content-sha256 too, as the official SDKs do.
 */

typedef struct {
    const char                 *name;
    size_t                      len;
    int                       (*hash_hex)(const u_char *data, size_t len,
                                          u_char *hex64);
    int                       (*hmac)(const u_char *key, size_t key_len,
                                      const u_char *data, size_t len,
                                      u_char *out32);
} ngx_http_idv_verify_alg_t;


static inline u_char *ngx_http_idv_verify_cpy(u_char *dst, const void *src,
    size_t n);
static int ngx_http_idv_verify_fail(ngx_http_idv_verify_t *v, int status,
    const char *code, const char *message);
static int ngx_http_idv_verify_nomem(ngx_http_idv_verify_t *v);
static int ngx_http_idv_verify_decode(ngx_http_idv_verify_t *v,
    const u_char *src, size_t len, unsigned body);
static ngx_http_idv_param_t *ngx_http_idv_verify_param(
    ngx_http_idv_verify_t *v, const char *name);
static int ngx_http_idv_verify_header(ngx_http_idv_verify_t *v,
    const u_char *name, size_t len, ngx_http_idv_str_t *value);
static int ngx_http_idv_verify_parse_v3(ngx_http_idv_verify_t *v,
    ngx_http_idv_str_t *auth);
static int ngx_http_idv_verify_parse_v1(ngx_http_idv_verify_t *v);
static int ngx_http_idv_verify_v3(ngx_http_idv_verify_t *v,
    const u_char *secret, size_t len);
static int ngx_http_idv_verify_v1(ngx_http_idv_verify_t *v,
    const u_char *secret, size_t len);
static u_char *ngx_http_idv_verify_canonical(ngx_http_idv_verify_t *v,
    ngx_http_idv_param_t *params, size_t n, size_t *len);
static int ngx_http_idv_verify_mismatch(ngx_http_idv_verify_t *v);
static int ngx_http_idv_verify_is(const ngx_http_idv_str_t *s,
    const char *lit, size_t len);
static int ngx_http_idv_sm3_hex(const u_char *data, size_t len,
    u_char *hex64);
static int ngx_http_idv_hmac_sm3(const u_char *key, size_t key_len,
    const u_char *data, size_t len, u_char *out32);


static const ngx_http_idv_verify_alg_t  ngx_http_idv_v3_sha256 = {
    "ACS3-HMAC-SHA256", sizeof("ACS3-HMAC-SHA256") - 1,
    ngx_http_idv_sha256_hex, ngx_http_idv_hmac_sha256
};

static const ngx_http_idv_verify_alg_t  ngx_http_idv_v3_sm3 = {
    "ACS3-HMAC-SM3", sizeof("ACS3-HMAC-SM3") - 1,
    ngx_http_idv_sm3_hex, ngx_http_idv_hmac_sm3
};


/* every parameter of the signature (V1) and of the SDK's envelope */

static const ngx_http_idv_verify_name_t  ngx_http_idv_system_params[] = {
    { "AccessKeyId", sizeof("AccessKeyId") - 1 },
    { "Action", sizeof("Action") - 1 },
    { "Format", sizeof("Format") - 1 },
    { "SecurityToken", sizeof("SecurityToken") - 1 },
    { "Signature", sizeof("Signature") - 1 },
    { "SignatureMethod", sizeof("SignatureMethod") - 1 },
    { "SignatureNonce", sizeof("SignatureNonce") - 1 },
    { "SignatureVersion", sizeof("SignatureVersion") - 1 },
    { "Timestamp", sizeof("Timestamp") - 1 },
    { "Version", sizeof("Version") - 1 },
    { NULL, 0 }
};


/* the headers a V3 signature must cover (content-type when sent) */

static const ngx_http_idv_verify_name_t  ngx_http_idv_v3_required[] = {
    { "host", sizeof("host") - 1 },
    { "x-acs-action", sizeof("x-acs-action") - 1 },
    { "x-acs-content-sha256", sizeof("x-acs-content-sha256") - 1 },
    { "x-acs-date", sizeof("x-acs-date") - 1 },
    { "x-acs-signature-nonce", sizeof("x-acs-signature-nonce") - 1 },
    { "x-acs-version", sizeof("x-acs-version") - 1 },
    { NULL, 0 }
};


/* the service's texts (API.md 8.1) */

static const char  ngx_http_idv_msg_incomplete[] =
    "The request signature does not conform to Aliyun standards.";
static const char  ngx_http_idv_msg_mismatch_v3[] =
    "Specified signature does not match our calculation. "
    "server StringToSign is [";
static const char  ngx_http_idv_msg_mismatch_v1[] =
    "Specified signature is not matched with our calculation.";


static inline u_char *
ngx_http_idv_verify_cpy(u_char *dst, const void *src, size_t n)
{
    if (n) {
        memcpy(dst, src, n);
    }

    return dst + n;
}


static int
ngx_http_idv_verify_fail(ngx_http_idv_verify_t *v, int status,
    const char *code, const char *message)
{
    v->status = status;
    v->code = code;
    v->message.data = (u_char *) message;
    v->message.len = strlen(message);

    return -1;
}


static int
ngx_http_idv_verify_nomem(ngx_http_idv_verify_t *v)
{
    v->status = 500;
    v->code = NULL;
    v->message.data = (u_char *) "out of memory";
    v->message.len = sizeof("out of memory") - 1;

    return -1;
}


static int
ngx_http_idv_verify_is(const ngx_http_idv_str_t *s, const char *lit,
    size_t len)
{
    return s->len == len && memcmp(s->data, lit, len) == 0;
}


int
ngx_http_idv_verify_system_param(const u_char *key, size_t len)
{
    const ngx_http_idv_verify_name_t  *n;

    for (n = ngx_http_idv_system_params; n->name; n++) {
        if (n->len == len && memcmp(n->name, key, len) == 0) {
            return 1;
        }
    }

    return 0;
}


int
ngx_http_idv_verify_parse(ngx_http_idv_verify_t *v)
{
    size_t                 i, n;
    ngx_http_idv_str_t     auth;
    ngx_http_idv_param_t  *p;

    v->params = NULL;
    v->nparams = 0;
    v->signed_headers = NULL;
    v->nsigned = 0;
    v->string_to_sign.len = 0;
    v->string_to_sign.data = NULL;

    /* one slot per '&' and one more, in the query and in a form body */

    n = 1;

    for (i = 0; i < v->query.len; i++) {
        n += (v->query.data[i] == '&');
    }

    if (v->form) {
        n++;

        for (i = 0; i < v->body.len; i++) {
            n += (v->body.data[i] == '&');

            if (n > 2 * NGX_HTTP_IDV_VERIFY_MAX_PARAMS) {
                break;
            }
        }
    }

    if (n > 2 * NGX_HTTP_IDV_VERIFY_MAX_PARAMS) {
        n = 2 * NGX_HTTP_IDV_VERIFY_MAX_PARAMS;
    }

    v->params = v->alloc(v->alloc_data, n * sizeof(ngx_http_idv_param_t));
    if (v->params == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    if (ngx_http_idv_verify_decode(v, v->query.data, v->query.len, 0) != 0) {
        return -1;
    }

    if (v->form
        && ngx_http_idv_verify_decode(v, v->body.data, v->body.len, 1) != 0)
    {
        return -1;
    }

    /* the same parameter twice would be signed twice but read once */

    for (i = 1; i < v->nparams; i++) {
        for (n = 0; n < i; n++) {
            p = &v->params[n];

            if (p->key.len == v->params[i].key.len
                && memcmp(p->key.data, v->params[i].key.data, p->key.len)
                   == 0)
            {
                return ngx_http_idv_verify_fail(v, 400, "InvalidParameter",
                                    "A parameter is given more than once.");
            }
        }
    }

    if (ngx_http_idv_verify_header(v, (u_char *) "authorization",
                                   sizeof("authorization") - 1, &auth)
        != 0)
    {
        return -1;
    }

    if (auth.len >= 5 && memcmp(auth.data, "ACS3-", 5) == 0) {
        return ngx_http_idv_verify_parse_v3(v, &auth);
    }

    if (ngx_http_idv_verify_param(v, "Signature") != NULL) {
        return ngx_http_idv_verify_parse_v1(v);
    }

    return ngx_http_idv_verify_fail(v, 400, "MissingSignature",
                                    "Signature is mandatory for this "
                                    "action.");
}


/* decode "k=v&k=v" (form rules) into copies: the raw bytes stay intact */

static int
ngx_http_idv_verify_decode(ngx_http_idv_verify_t *v, const u_char *src,
    size_t len, unsigned body)
{
    u_char                *buf;
    size_t                 klen, vlen;
    const u_char          *p, *end, *amp, *eq;
    ngx_http_idv_param_t  *prm;

    if (len == 0) {
        return 0;
    }

    buf = v->alloc(v->alloc_data, len);
    if (buf == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    p = src;
    end = src + len;

    while (p < end) {

        amp = memchr(p, '&', end - p);
        if (amp == NULL) {
            amp = end;
        }

        if (amp == p) {
            p++;
            continue;
        }

        if (v->nparams == NGX_HTTP_IDV_VERIFY_MAX_PARAMS) {
            return ngx_http_idv_verify_fail(v, 400, "InvalidParameter",
                                            "The request has too many "
                                            "parameters.");
        }

        eq = memchr(p, '=', amp - p);
        if (eq == NULL) {
            eq = amp;
        }

        klen = ngx_http_idv_pct_decode(buf, p, eq - p);
        vlen = 0;

        if (klen != (size_t) -1 && eq < amp) {
            vlen = ngx_http_idv_pct_decode(buf + klen, eq + 1, amp - eq - 1);
        }

        if (klen == (size_t) -1 || vlen == (size_t) -1) {
            return ngx_http_idv_verify_fail(v, 400, "InvalidParameter",
                                            body
                                            ? "The form body is not valid "
                                              "urlencoded data."
                                            : "The query string is not "
                                              "valid urlencoded data.");
        }

        if (klen == 0) {
            return ngx_http_idv_verify_fail(v, 400, "InvalidParameter",
                                            "A parameter has no name.");
        }

        prm = &v->params[v->nparams++];

        prm->key.data = buf;
        prm->key.len = klen;
        prm->value.data = buf + klen;
        prm->value.len = vlen;
        prm->body = body;
        prm->pii = 0;
        prm->base64 = 0;

        buf += klen + vlen;
        p = amp + 1;
    }

    return 0;
}


static ngx_http_idv_param_t *
ngx_http_idv_verify_param(ngx_http_idv_verify_t *v, const char *name)
{
    size_t  i, len;

    len = strlen(name);

    for (i = 0; i < v->nparams; i++) {
        if (v->params[i].key.len == len
            && memcmp(v->params[i].key.data, name, len) == 0)
        {
            return &v->params[i];
        }
    }

    return NULL;
}


/*
 * A header's value; repeated headers are joined with ',' as the SDKs
 * canonicalise them.  Absent: an empty value.
 */

static int
ngx_http_idv_verify_header(ngx_http_idv_verify_t *v, const u_char *name,
    size_t len, ngx_http_idv_str_t *value)
{
    u_char                       *p;
    size_t                        i, n, size;
    const ngx_http_idv_header_t  *h;

    n = 0;
    size = 0;
    value->len = 0;
    value->data = (u_char *) "";

    for (i = 0; i < v->nheaders; i++) {
        h = &v->headers[i];

        if (h->name.len == len && memcmp(h->name.data, name, len) == 0) {
            *value = h->value;
            size += h->value.len + 1;
            n++;
        }
    }

    if (n < 2) {
        return 0;
    }

    p = v->alloc(v->alloc_data, size);
    if (p == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    value->data = p;

    for (i = 0; i < v->nheaders; i++) {
        h = &v->headers[i];

        if (h->name.len == len && memcmp(h->name.data, name, len) == 0) {
            if (p != value->data) {
                *p++ = ',';
            }

            p = ngx_http_idv_verify_cpy(p, h->value.data, h->value.len);
        }
    }

    value->len = p - value->data;

    return 0;
}


/*
 * Authorization: ACS3-HMAC-SHA256 Credential=ID,SignedHeaders=a;b,
 * Signature=HEX (or ACS3-HMAC-SM3 ...)
 */

static int
ngx_http_idv_verify_parse_v3(ngx_http_idv_verify_t *v,
    ngx_http_idv_str_t *auth)
{
    u_char                            *p, *end, *comma, *eq, *name, c;
    size_t                             i, j, n, len;
    ngx_http_idv_str_t                 sh, *dst;
    ngx_http_idv_param_t               names[NGX_HTTP_IDV_VERIFY_MAX_SIGNED];
    const ngx_http_idv_verify_name_t  *req;
    const ngx_http_idv_verify_alg_t   *alg;

    v->algorithm = NGX_HTTP_IDV_SIGN_V3;

    alg = &ngx_http_idv_v3_sha256;

    if (auth->len > ngx_http_idv_v3_sm3.len
        && memcmp(auth->data, ngx_http_idv_v3_sm3.name,
                  ngx_http_idv_v3_sm3.len) == 0
        && auth->data[ngx_http_idv_v3_sm3.len] == ' ')
    {
        alg = &ngx_http_idv_v3_sm3;
        v->sm3 = 1;
    }

    len = alg->len;

    if (auth->len <= len
        || memcmp(auth->data, alg->name, len) != 0
        || auth->data[len] != ' ')
    {
        return ngx_http_idv_verify_fail(v, 400, "InvalidSignatureMethod",
                                        "Specified signature method is not "
                                        "valid.");
    }

    sh.len = 0;
    sh.data = NULL;

    p = auth->data + len;
    end = auth->data + auth->len;

    while (p < end) {

        while (p < end && (*p == ' ' || *p == ',')) {
            p++;
        }

        comma = memchr(p, ',', end - p);
        if (comma == NULL) {
            comma = end;
        }

        eq = memchr(p, '=', comma - p);

        if (eq == NULL) {
            p = comma;
            continue;
        }

        if (eq - p == sizeof("Credential") - 1
            && memcmp(p, "Credential", eq - p) == 0)
        {
            dst = &v->access_key_id;

        } else if (eq - p == sizeof("SignedHeaders") - 1
                   && memcmp(p, "SignedHeaders", eq - p) == 0)
        {
            dst = &sh;

        } else if (eq - p == sizeof("Signature") - 1
                   && memcmp(p, "Signature", eq - p) == 0)
        {
            dst = &v->signature;

        } else {
            p = comma;
            continue;
        }

        dst->data = eq + 1;
        dst->len = comma - eq - 1;

        p = comma;
    }

    if (v->access_key_id.len == 0 || sh.len == 0 || v->signature.len == 0) {
        return ngx_http_idv_verify_fail(v, 400, "IncompleteSignature",
                                        ngx_http_idv_msg_incomplete);
    }

    /* the signed header names: lower case, sorted, each once */

    n = 0;
    p = sh.data;
    end = sh.data + sh.len;

    while (p < end) {

        name = p;

        while (p < end && *p != ';') {
            p++;
        }

        len = p - name;
        p++;

        if (len == 0) {
            continue;
        }

        if (n == NGX_HTTP_IDV_VERIFY_MAX_SIGNED) {
            return ngx_http_idv_verify_fail(v, 400, "IncompleteSignature",
                                            ngx_http_idv_msg_incomplete);
        }

        names[n].key.data = v->alloc(v->alloc_data, len);
        if (names[n].key.data == NULL) {
            return ngx_http_idv_verify_nomem(v);
        }

        for (i = 0; i < len; i++) {
            c = name[i];
            names[n].key.data[i] = (c >= 'A' && c <= 'Z') ? (c | 0x20) : c;
        }

        names[n].key.len = len;
        n++;
    }

    ngx_http_idv_params_sort(names, n);

    v->signed_headers = v->alloc(v->alloc_data,
                                 (n ? n : 1) * sizeof(ngx_http_idv_str_t));
    if (v->signed_headers == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    for (i = 0; i < n; i++) {
        if (v->nsigned
            && v->signed_headers[v->nsigned - 1].len == names[i].key.len
            && memcmp(v->signed_headers[v->nsigned - 1].data,
                      names[i].key.data, names[i].key.len) == 0)
        {
            continue;
        }

        v->signed_headers[v->nsigned++] = names[i].key;
    }

    /* a request the signature does not fully cover is refused */

    for (req = ngx_http_idv_v3_required; req->name; req++) {
        for (j = 0; j < v->nsigned; j++) {
            if (ngx_http_idv_verify_is(&v->signed_headers[j], req->name,
                                       req->len))
            {
                break;
            }
        }

        if (j == v->nsigned) {
            return ngx_http_idv_verify_fail(v, 400, "IncompleteSignature",
                                            ngx_http_idv_msg_incomplete);
        }
    }

    for (i = 0; i < v->nheaders; i++) {
        if (ngx_http_idv_verify_is(&v->headers[i].name, "content-type", 12)) {
            break;
        }
    }

    if (i < v->nheaders) {
        for (j = 0; j < v->nsigned; j++) {
            if (ngx_http_idv_verify_is(&v->signed_headers[j], "content-type",
                                       12))
            {
                break;
            }
        }

        if (j == v->nsigned) {
            return ngx_http_idv_verify_fail(v, 400, "IncompleteSignature",
                                            ngx_http_idv_msg_incomplete);
        }
    }

    if (ngx_http_idv_verify_header(v, (u_char *) "x-acs-action", 12,
                                   &v->action) != 0
        || ngx_http_idv_verify_header(v, (u_char *) "x-acs-version", 13,
                                      &v->version) != 0
        || ngx_http_idv_verify_header(v, (u_char *) "x-acs-date", 10,
                                      &v->timestamp) != 0
        || ngx_http_idv_verify_header(v, (u_char *) "x-acs-signature-nonce",
                                      21, &v->nonce) != 0)
    {
        return -1;
    }

    if (v->timestamp.len == 0) {
        return ngx_http_idv_verify_fail(v, 400, "MissingTimestamp",
                                        "Timestamp is mandatory for this "
                                        "action.");
    }

    if (v->nonce.len == 0 || v->nonce.len > NGX_HTTP_IDV_VERIFY_MAX_NONCE) {
        return ngx_http_idv_verify_fail(v, 400, "MissingSignatureNonce",
                                        "SignatureNonce is mandatory for "
                                        "this action.");
    }

    return 0;
}


static int
ngx_http_idv_verify_parse_v1(ngx_http_idv_verify_t *v)
{
    ngx_http_idv_param_t  *p;

    v->algorithm = NGX_HTTP_IDV_SIGN_V1;

#define ngx_http_idv_verify_need(name, dst)                                  \
    p = ngx_http_idv_verify_param(v, name);                                  \
    if (p == NULL || p->value.len == 0) {                                    \
        return ngx_http_idv_verify_fail(v, 400, "Missing" name,              \
                                        name " is mandatory for this "       \
                                        "action.");                          \
    }                                                                        \
    dst = p->value

    ngx_http_idv_verify_need("AccessKeyId", v->access_key_id);
    ngx_http_idv_verify_need("Signature", v->signature);
    ngx_http_idv_verify_need("Timestamp", v->timestamp);
    ngx_http_idv_verify_need("SignatureNonce", v->nonce);
    ngx_http_idv_verify_need("Action", v->action);
    ngx_http_idv_verify_need("Version", v->version);

#undef ngx_http_idv_verify_need

    p = ngx_http_idv_verify_param(v, "SignatureMethod");

    if (p == NULL || !ngx_http_idv_verify_is(&p->value, "HMAC-SHA1", 9)) {
        return ngx_http_idv_verify_fail(v, 400, "InvalidSignatureMethod",
                                        "Specified signature method is not "
                                        "valid.");
    }

    p = ngx_http_idv_verify_param(v, "SignatureVersion");

    if (p == NULL || !ngx_http_idv_verify_is(&p->value, "1.0", 3)) {
        return ngx_http_idv_verify_fail(v, 400, "InvalidSignatureVersion",
                                        "Specified signature version is not "
                                        "valid.");
    }

    if (v->nonce.len > NGX_HTTP_IDV_VERIFY_MAX_NONCE) {
        return ngx_http_idv_verify_fail(v, 400, "MissingSignatureNonce",
                                        "SignatureNonce is mandatory for "
                                        "this action.");
    }

    return 0;
}


int
ngx_http_idv_parse_time(const u_char *p, size_t len, time_t *t)
{
    int            i, k, f[6];
    long long      y, m, d, era, yoe, doy, doe, days;
    const u_char  *end;

    static const int  width[6] = { 4, 2, 2, 2, 2, 2 };
    static const char sep[6] = { '-', '-', 'T', ':', ':', '\0' };

    end = p + len;

    for (i = 0; i < 6; i++) {
        f[i] = 0;

        if (end - p < width[i]) {
            return -1;
        }

        for (k = 0; k < width[i]; k++, p++) {
            if (*p < '0' || *p > '9') {
                return -1;
            }

            f[i] = f[i] * 10 + (*p - '0');
        }

        if (sep[i]) {
            if (p == end || *p != sep[i]) {
                return -1;
            }

            p++;
        }
    }

    /* optional fractions of a second, then the mandatory Z */

    if (p < end && *p == '.') {
        p++;

        if (p == end || *p < '0' || *p > '9') {
            return -1;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p == end || *p != 'Z' || p + 1 != end) {
        return -1;
    }

    y = f[0];
    m = f[1];
    d = f[2];

    if (y < 1970 || m < 1 || m > 12 || d < 1 || f[3] > 23 || f[4] > 59
        || f[5] > 60)
    {
        return -1;
    }

    if (d > 28) {
        static const int  mdays[12] = { 31, 29, 31, 30, 31, 30,
                                        31, 31, 30, 31, 30, 31 };

        if (d > mdays[m - 1]
            || (m == 2 && d == 29
                && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
        {
            return -1;
        }
    }

    /* days since 1970-01-01 in the proleptic Gregorian calendar */

    y -= (m <= 2);
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = era * 146097 + doe - 719468;

    *t = (time_t) (days * 86400 + f[3] * 3600 + f[4] * 60 + f[5]);

    return 0;
}


int
ngx_http_idv_verify_time(ngx_http_idv_verify_t *v, time_t now, time_t window)
{
    if (ngx_http_idv_parse_time(v->timestamp.data, v->timestamp.len,
                                &v->time)
        != 0)
    {
        return ngx_http_idv_verify_fail(v, 400, "InvalidTimeStamp.Format",
                                        "Specified time stamp or date value "
                                        "is not well formatted.");
    }

    if (v->time < now - window || v->time > now + window) {
        return ngx_http_idv_verify_fail(v, 400, "InvalidTimeStamp.Expired",
                                        "Specified time stamp or date value "
                                        "is expired.");
    }

    return 0;
}


int
ngx_http_idv_verify_signature(ngx_http_idv_verify_t *v,
    const u_char *secret, size_t len)
{
    switch (v->algorithm) {

    case NGX_HTTP_IDV_SIGN_V3:
        return ngx_http_idv_verify_v3(v, secret, len);

    case NGX_HTTP_IDV_SIGN_V1:
        return ngx_http_idv_verify_v1(v, secret, len);

    default:
        return ngx_http_idv_verify_fail(v, 400, "MissingSignature",
                                        "Signature is mandatory for this "
                                        "action.");
    }
}


/* "enc(k)=enc(v)&..." of the parameters, sorted by key bytes */

static u_char *
ngx_http_idv_verify_canonical(ngx_http_idv_verify_t *v,
    ngx_http_idv_param_t *params, size_t n, size_t *len)
{
    u_char  *buf, *p;
    size_t   i, size;

    ngx_http_idv_params_sort(params, n);

    size = 0;

    for (i = 0; i < n; i++) {
        size += ngx_http_idv_pct_encoded_len(params[i].key.data,
                                             params[i].key.len)
                + ngx_http_idv_pct_encoded_len(params[i].value.data,
                                               params[i].value.len)
                + 2;
    }

    buf = v->alloc(v->alloc_data, size ? size : 1);
    if (buf == NULL) {
        return NULL;
    }

    p = buf;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = '&';
        }

        p = ngx_http_idv_pct_encode(p, params[i].key.data, params[i].key.len);
        *p++ = '=';
        p = ngx_http_idv_pct_encode(p, params[i].value.data,
                                    params[i].value.len);
    }

    *len = p - buf;

    return buf;
}


/*
 * V3: the canonical request from the decoded query parameters, the
 * signed headers as received (trimmed) and the hash of the body bytes;
 * the body hash the client claims must be that hash.
 */

static int
ngx_http_idv_verify_v3(ngx_http_idv_verify_t *v, const u_char *secret,
    size_t len)
{
    u_char                *cq, *cr, *p, *sts;
    size_t                 i, n, cq_len, size;
    ngx_http_idv_str_t    *values, claimed, *value;
    ngx_http_idv_param_t  *query;
    u_char                 hash[64], mac[32], hex[64];

    const ngx_http_idv_verify_alg_t  *alg;

    alg = v->sm3 ? &ngx_http_idv_v3_sm3 : &ngx_http_idv_v3_sha256;

    query = v->alloc(v->alloc_data,
                     (v->nparams ? v->nparams : 1)
                     * sizeof(ngx_http_idv_param_t));
    values = v->alloc(v->alloc_data,
                      (v->nsigned ? v->nsigned : 1)
                      * sizeof(ngx_http_idv_str_t));

    if (query == NULL || values == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    n = 0;

    for (i = 0; i < v->nparams; i++) {
        if (!v->params[i].body) {
            query[n++] = v->params[i];
        }
    }

    cq = ngx_http_idv_verify_canonical(v, query, n, &cq_len);
    if (cq == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    size = v->method.len + 1 + v->path.len + 1 + cq_len + 1;

    for (i = 0; i < v->nsigned; i++) {
        value = &values[i];

        if (ngx_http_idv_verify_header(v, v->signed_headers[i].data,
                                       v->signed_headers[i].len, value)
            != 0)
        {
            return -1;
        }

        while (value->len && (value->data[0] == ' '
                              || value->data[0] == '\t'))
        {
            value->data++;
            value->len--;
        }

        while (value->len && (value->data[value->len - 1] == ' '
                              || value->data[value->len - 1] == '\t'))
        {
            value->len--;
        }

        size += 2 * v->signed_headers[i].len + value->len + 3;
    }

    size += 1 + 64;

    cr = v->alloc(v->alloc_data, size);
    sts = v->alloc(v->alloc_data, alg->len + 1 + 64);

    if (cr == NULL || sts == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    if (alg->hash_hex(v->body.data, v->body.len, hash) != 0) {
        return ngx_http_idv_verify_nomem(v);
    }

    p = cr;
    p = ngx_http_idv_verify_cpy(p, v->method.data, v->method.len);
    *p++ = '\n';
    p = ngx_http_idv_verify_cpy(p, v->path.data, v->path.len);
    *p++ = '\n';
    p = ngx_http_idv_verify_cpy(p, cq, cq_len);
    *p++ = '\n';

    for (i = 0; i < v->nsigned; i++) {
        p = ngx_http_idv_verify_cpy(p, v->signed_headers[i].data,
                                    v->signed_headers[i].len);
        *p++ = ':';
        p = ngx_http_idv_verify_cpy(p, values[i].data, values[i].len);
        *p++ = '\n';
    }

    *p++ = '\n';

    for (i = 0; i < v->nsigned; i++) {
        if (i) {
            *p++ = ';';
        }

        p = ngx_http_idv_verify_cpy(p, v->signed_headers[i].data,
                                    v->signed_headers[i].len);
    }

    *p++ = '\n';
    p = ngx_http_idv_verify_cpy(p, hash, 64);

    memcpy(sts, alg->name, alg->len);
    sts[alg->len] = '\n';

    if (alg->hash_hex(cr, p - cr, sts + alg->len + 1) != 0) {
        return ngx_http_idv_verify_nomem(v);
    }

    v->string_to_sign.data = sts;
    v->string_to_sign.len = alg->len + 1 + 64;

    /* x-acs-content-sha256 is signed: it must be the body's hash */

    if (ngx_http_idv_verify_header(v, (u_char *) "x-acs-content-sha256", 20,
                                   &claimed)
        != 0)
    {
        return -1;
    }

    if (claimed.len != 64 || !ngx_http_idv_memeq_const(claimed.data, hash, 64))
    {
        return ngx_http_idv_verify_mismatch(v);
    }

    if (alg->hmac(secret, len, v->string_to_sign.data,
                  v->string_to_sign.len, mac)
        != 0)
    {
        return ngx_http_idv_verify_nomem(v);
    }

    ngx_http_idv_hex(hex, mac, sizeof(mac));

    if (v->signature.len != 64
        || !ngx_http_idv_memeq_const(v->signature.data, hex, 64))
    {
        return ngx_http_idv_verify_mismatch(v);
    }

    return 0;
}


/*
 * V1: every parameter but Signature, query and body alike;
 * StringToSign = METHOD&%2F&enc(canonical); key = secret + "&".
 */

static int
ngx_http_idv_verify_v1(ngx_http_idv_verify_t *v, const u_char *secret,
    size_t len)
{
    int                    rc;
    u_char                *cq, *sts, *p, *key;
    size_t                 i, n, cq_len, sts_len;
    ngx_http_idv_param_t  *params;
    u_char                 mac[20], b64[28];

    params = v->alloc(v->alloc_data,
                      (v->nparams ? v->nparams : 1)
                      * sizeof(ngx_http_idv_param_t));
    if (params == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    n = 0;

    for (i = 0; i < v->nparams; i++) {
        if (!ngx_http_idv_verify_is(&v->params[i].key, "Signature", 9)) {
            params[n++] = v->params[i];
        }
    }

    cq = ngx_http_idv_verify_canonical(v, params, n, &cq_len);
    if (cq == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    sts_len = v->method.len + sizeof("&%2F&") - 1
              + ngx_http_idv_pct_encoded_len(cq, cq_len);

    sts = v->alloc(v->alloc_data, sts_len);
    key = v->alloc(v->alloc_data, len + 1);

    if (sts == NULL || key == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    p = sts;
    p = ngx_http_idv_verify_cpy(p, v->method.data, v->method.len);
    p = ngx_http_idv_verify_cpy(p, "&%2F&", sizeof("&%2F&") - 1);
    (void) ngx_http_idv_pct_encode(p, cq, cq_len);

    v->string_to_sign.data = sts;
    v->string_to_sign.len = sts_len;

    if (len) {
        memcpy(key, secret, len);
    }

    key[len] = '&';

    rc = ngx_http_idv_hmac_sha1(key, len + 1, sts, sts_len, mac);

    OPENSSL_cleanse(key, len + 1);

    if (rc != 0) {
        return ngx_http_idv_verify_nomem(v);
    }

    (void) ngx_http_idv_base64_encode(b64, mac, sizeof(mac));

    if (v->signature.len != sizeof(b64)
        || !ngx_http_idv_memeq_const(v->signature.data, b64, sizeof(b64)))
    {
        return ngx_http_idv_verify_mismatch(v);
    }

    return 0;
}


/*
 * The service echoes its string to sign.  The V3 one is a digest and
 * helps a client find its mistake; the V1 one holds every parameter,
 * identity data included, and is not echoed.
 */

static int
ngx_http_idv_verify_mismatch(ngx_http_idv_verify_t *v)
{
    u_char  *p;
    size_t   len;

    v->status = 400;
    v->code = "SignatureDoesNotMatch";

    if (v->algorithm != NGX_HTTP_IDV_SIGN_V3 || v->string_to_sign.len == 0) {
        v->message.data = (u_char *) ngx_http_idv_msg_mismatch_v1;
        v->message.len = sizeof(ngx_http_idv_msg_mismatch_v1) - 1;
        return -1;
    }

    len = sizeof(ngx_http_idv_msg_mismatch_v3) - 1 + v->string_to_sign.len
          + 1;

    p = v->alloc(v->alloc_data, len);
    if (p == NULL) {
        return ngx_http_idv_verify_nomem(v);
    }

    v->message.data = p;
    v->message.len = len;

    memcpy(p, ngx_http_idv_msg_mismatch_v3,
           sizeof(ngx_http_idv_msg_mismatch_v3) - 1);
    p += sizeof(ngx_http_idv_msg_mismatch_v3) - 1;
    p = ngx_http_idv_verify_cpy(p, v->string_to_sign.data,
                                v->string_to_sign.len);
    *p = ']';

    return -1;
}


/* SM3 (GB/T 32905) from libcrypto: -1 where it is not built in */

static int
ngx_http_idv_sm3_hex(const u_char *data, size_t len, u_char *hex64)
{
    u_char         md[EVP_MAX_MD_SIZE];
    unsigned int   n;
    const EVP_MD  *sm3;

    sm3 = EVP_sm3();

    if (sm3 == NULL
        || EVP_Digest(len ? data : (const u_char *) "", len, md, &n, sm3,
                      NULL)
           != 1
        || n != 32)
    {
        return -1;
    }

    ngx_http_idv_hex(hex64, md, 32);

    return 0;
}


static int
ngx_http_idv_hmac_sm3(const u_char *key, size_t key_len, const u_char *data,
    size_t len, u_char *out32)
{
    unsigned int   n;
    const EVP_MD  *sm3;

    sm3 = EVP_sm3();

    if (sm3 == NULL
        || HMAC(sm3, key_len ? key : (const u_char *) "", (int) key_len,
                len ? data : (const u_char *) "", len, out32, &n)
           == NULL
        || n != 32)
    {
        return -1;
    }

    return 0;
}
