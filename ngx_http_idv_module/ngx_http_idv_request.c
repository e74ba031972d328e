
/*
 * ngx_http_idv_module: the request model (pure core).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "ngx_http_idv_request.h"
#include "ngx_http_idv_json.h"


#define IDV_B64_BAD  0xff

/* "-9223372036854775808" */
#define NGX_HTTP_IDV_INT64_LEN  20


static int ngx_http_idv_req_error(ngx_http_idv_req_t *rq, int status,
    const char *code, const char *fmt, const u_char *name, size_t len);
static int ngx_http_idv_req_add(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p, u_char *value, size_t len);
static const ngx_http_idv_op_param_t *ngx_http_idv_req_param(
    ngx_http_idv_req_t *rq, const u_char *key, size_t len);
static const ngx_http_idv_op_param_t *ngx_http_idv_req_lookup(
    ngx_http_idv_req_t *rq, const u_char *key, size_t len);
/* a parameter of the action's row (not one idv_allow_param allows) */
#define ngx_http_idv_req_is_row(rq, p)                                        \
    ((p) >= (rq)->op->params && (p) < (rq)->op->params + (rq)->op->nparams)


static ngx_http_idv_param_t *ngx_http_idv_req_row(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p);
static int ngx_http_idv_json_nul(const u_char *p, size_t len);
static int ngx_http_idv_json_int64(const u_char *p, size_t len, u_char *out);
static char *ngx_http_idv_json_typed(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p, cJSON *item, u_char *text,
    size_t len);
static int ngx_http_idv_json_string(u_char **pp, u_char *end, u_char **str,
    size_t *len);
static u_char *ngx_http_idv_json_skip(u_char *p, u_char *end);
static size_t ngx_http_idv_form_decode(u_char *p, size_t len);
static int ngx_http_idv_b64_at(const u_char *b64, size_t len, size_t off,
    u_char *out, size_t n);
static int ngx_http_idv_image_size(const u_char *b64, size_t len,
    size_t size, unsigned *w, unsigned *h);
static int ngx_http_idv_url_check(const u_char *v, size_t len, int https);
static int ngx_http_idv_id_check(const u_char *v, size_t len);
static int ngx_http_idv_req_validate_param(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p);
static int ngx_http_idv_rule_check(const ngx_http_idv_op_rule_t *rule,
    const u_char *v, size_t len, size_t chars);
static int ngx_http_idv_rule_error(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p);
static size_t ngx_http_idv_msg_add(ngx_http_idv_req_t *rq, size_t at,
    const char *s, size_t len);


static const u_char  ngx_http_idv_b64_dec[256] = {
#define X IDV_B64_BAD
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, 62, X, X, X, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X, X, X, X, X, X,
    X, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X, X, X, X, X,
    X, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X
#undef X
};


static int
ngx_http_idv_req_error(ngx_http_idv_req_t *rq, int status, const char *code,
    const char *fmt, const u_char *name, size_t len)
{
    size_t  i, n;
    char    safe[64];

    /*
     * Parameter names come from the backend.  Only a name that looks like
     * one (a letter, then letters, digits, '_', '-', '.', at most 60
     * bytes) is shown; anything else may be a value sent the wrong way
     * (a JSON body as a form), an identity number among it: not shown.
     */

    n = 0;

    for (i = 0; name && i < len && i < sizeof(safe) - 4; i++) {
        if (!((name[i] >= 'A' && name[i] <= 'Z')
              || (name[i] >= 'a' && name[i] <= 'z')
              || (i > 0 && ((name[i] >= '0' && name[i] <= '9')
                            || name[i] == '_' || name[i] == '-'
                            || name[i] == '.'))))
        {
            break;
        }

        safe[n++] = name[i];
    }

    if (name && (len == 0 || i < len)) {
        n = sizeof("(a name not shown)") - 1;
        memcpy(safe, "(a name not shown)", n);
    }

    safe[n] = '\0';

    rq->status = status;
    rq->code = code;
    snprintf(rq->message, sizeof(rq->message), fmt, safe);

    return -1;
}


/* a parameter of the action's row, or one idv_allow_param adds */

static const ngx_http_idv_op_param_t *
ngx_http_idv_req_param(ngx_http_idv_req_t *rq, const u_char *key, size_t len)
{
    size_t                          i;
    const ngx_http_idv_op_param_t  *p;

    p = ngx_http_idv_op_param(rq->op, key, len);

    if (p != NULL) {
        return p;
    }

    for (i = 0; i < rq->nextra; i++) {
        p = &rq->extra[i];

        if (p->name.len == len && memcmp(p->name.data, key, len) == 0) {
            return p;
        }
    }

    return NULL;
}


static const ngx_http_idv_op_param_t *
ngx_http_idv_req_lookup(ngx_http_idv_req_t *rq, const u_char *key, size_t len)
{
    const ngx_http_idv_op_param_t  *p;

    p = ngx_http_idv_req_param(rq, key, len);

    if (p == NULL) {
        ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                               "Parameter %s is not accepted by this action",
                               key, len);
        return NULL;
    }

    if (ngx_http_idv_req_row(rq, p) != NULL) {
        ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                               "Parameter %s is given more than once",
                               key, len);
        return NULL;
    }

    return p;
}


static int
ngx_http_idv_req_add(ngx_http_idv_req_t *rq, const ngx_http_idv_op_param_t *p,
    u_char *value, size_t len)
{
    size_t                 n;
    ngx_http_idv_param_t  *dst;

    if (rq->params == NULL) {
        n = rq->op->nparams + rq->nextra + NGX_HTTP_IDV_EXTRA_PARAMS;

        rq->params = rq->alloc(rq->alloc_data,
                               n * sizeof(ngx_http_idv_param_t)
                               + rq->op->nparams * sizeof(uint16_t));
        if (rq->params == NULL) {
            rq->status = 500;
            rq->code = "Gateway.InternalError";
            snprintf(rq->message, sizeof(rq->message), "out of memory");
            return -1;
        }

        rq->rows = (uint16_t *) (rq->params + n);
        rq->rows_of = rq->params;
        memset(rq->rows, 0, rq->op->nparams * sizeof(uint16_t));
    }

    if (rq->rows_of == rq->params && ngx_http_idv_req_is_row(rq, p)) {
        rq->rows[p - rq->op->params] = (uint16_t) (rq->nparams + 1);
    }

    dst = &rq->params[rq->nparams++];

    dst->key = p->name;
    dst->value.data = value;
    dst->value.len = len;
    dst->body = (p->flags & NGX_HTTP_IDV_P_BODY) ? 1 : 0;
    dst->pii = (p->flags & NGX_HTTP_IDV_P_PII) ? 1 : 0;
    dst->base64 = 0;

    return 0;
}


/* the parameter of an operation's row: one look at the map */

static ngx_http_idv_param_t *
ngx_http_idv_req_row(ngx_http_idv_req_t *rq, const ngx_http_idv_op_param_t *p)
{
    size_t                 k;
    ngx_http_idv_param_t  *v;

    if (rq->rows == NULL || rq->rows_of != rq->params
        || !ngx_http_idv_req_is_row(rq, p))
    {
        /* no map (yet, or any more), or a parameter idv_allow_param allows */
        return ngx_http_idv_req_get(rq, (const char *) p->name.data);
    }

    k = rq->rows[p - rq->op->params];

    if (k == 0) {
        return NULL;
    }

    v = &rq->params[k - 1];

    if (k > rq->nparams || v->key.data != p->name.data) {
        /* reordered since */
        return ngx_http_idv_req_get(rq, (const char *) p->name.data);
    }

    return v;
}


ngx_http_idv_param_t *
ngx_http_idv_req_get(ngx_http_idv_req_t *rq, const char *name)
{
    size_t  i, len;

    len = strlen(name);

    for (i = 0; i < rq->nparams; i++) {
        if (rq->params[i].key.len == len
            && memcmp(rq->params[i].key.data, name, len) == 0)
        {
            return &rq->params[i];
        }
    }

    return NULL;
}


int
ngx_http_idv_req_set(ngx_http_idv_req_t *rq, const char *name, u_char *value,
    size_t len)
{
    ngx_http_idv_param_t           *dst;
    const ngx_http_idv_op_param_t  *p;

    dst = ngx_http_idv_req_get(rq, name);

    if (dst != NULL) {
        dst->value.data = value;
        dst->value.len = len;
        return 0;
    }

    p = ngx_http_idv_op_param(rq->op, (const u_char *) name, strlen(name));
    if (p == NULL) {
        return ngx_http_idv_req_error(rq, 500, "Gateway.InternalError",
                                      "Action does not take %s",
                                      (const u_char *) name, strlen(name));
    }

    return ngx_http_idv_req_add(rq, p, value, len);
}


/* a parameter named by the client, checked like the parsers check it */

int
ngx_http_idv_req_add_param(ngx_http_idv_req_t *rq, u_char *key, size_t klen,
    u_char *value, size_t len)
{
    const ngx_http_idv_op_param_t  *p;

    p = ngx_http_idv_req_lookup(rq, key, klen);
    if (p == NULL) {
        return -1;
    }

    return ngx_http_idv_req_add(rq, p, value, len);
}


/*
 * The backend's JSON object, parsed in place: string values (the images
 * among them) are unescaped where they lie, which never makes them longer,
 * so a 1 MB image is not copied here.  Only the rare typed values
 * (integers, booleans, arrays, objects) go through cJSON, one at a time.
 */

int
ngx_http_idv_req_parse_json(ngx_http_idv_req_t *rq, u_char *body, size_t len)
{
    char                           *s;
    u_char                         *p, *end, *key, *val, *vend;
    cJSON                          *holder, *item;
    size_t                          klen, vlen;
    const char                     *cend;
    const ngx_http_idv_op_param_t  *prm;

    p = body;
    end = body + len;

    p = (u_char *) ngx_http_idv_json_ws(p, end);

    if (p == end || *p != '{') {
        return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                      "The request body must be a JSON "
                                      "object%s", NULL, 0);
    }

    p = (u_char *) ngx_http_idv_json_ws(p + 1, end);

    if (p < end && *p == '}') {
        p++;
        goto done;
    }

    for ( ;; ) {

        if (p == end || *p != '"'
            || ngx_http_idv_json_string(&p, end, &key, &klen) != 0)
        {
            goto invalid;
        }

        p = (u_char *) ngx_http_idv_json_ws(p, end);

        if (p == end || *p != ':') {
            goto invalid;
        }

        p = (u_char *) ngx_http_idv_json_ws(p + 1, end);

        if (p == end) {
            goto invalid;
        }

        if (*p == '"') {
            if (ngx_http_idv_json_string(&p, end, &val, &vlen) != 0) {
                goto invalid;
            }

            prm = ngx_http_idv_req_lookup(rq, key, klen);
            if (prm == NULL) {
                return -1;
            }

            if (ngx_http_idv_req_add(rq, prm, val, vlen) != 0) {
                return -1;
            }

        } else {
            /*
             * a JSON value must start here: cJSON, which reads it below,
             * would first skip a UTF-8 byte-order mark or control bytes
             */

            if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == 't'
                  || *p == 'f' || *p == 'n' || *p == '[' || *p == '{'))
            {
                goto invalid;
            }

            val = p;
            vend = ngx_http_idv_json_skip(p, end);

            if (vend == NULL) {
                goto invalid;
            }

            p = vend;

            /* cJSON's strings end at a NUL: a value would be cut short */

            if (ngx_http_idv_json_nul(val, vend - val)) {
                return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                              "The request body contains a "
                                              "NUL character%s", NULL, 0);
            }

            item = cJSON_ParseWithLengthOpts((const char *) val, vend - val,
                                             &cend, 0);

            if (item == NULL || cend != (const char *) vend) {
                cJSON_Delete(item);
                goto invalid;
            }

            /* kept with the request: freed by ngx_http_idv_req_free() */

            holder = rq->json;

            if (holder == NULL) {
                holder = cJSON_CreateArray();
                if (holder == NULL) {
                    cJSON_Delete(item);
                    goto nomem;
                }

                rq->json = holder;
            }

            cJSON_AddItemToArray(holder, item);

            prm = ngx_http_idv_req_lookup(rq, key, klen);
            if (prm == NULL) {
                return -1;
            }

            s = ngx_http_idv_json_typed(rq, prm, item, val, vend - val);
            if (s == NULL) {
                return -1;
            }

            if (ngx_http_idv_req_add(rq, prm, (u_char *) s, strlen(s)) != 0) {
                return -1;
            }
        }

        p = (u_char *) ngx_http_idv_json_ws(p, end);

        if (p < end && *p == ',') {
            p = (u_char *) ngx_http_idv_json_ws(p + 1, end);
            continue;
        }

        if (p < end && *p == '}') {
            p++;
            break;
        }

        goto invalid;
    }

done:

    if (ngx_http_idv_json_ws(p, end) != end) {
        goto invalid;
    }

    return 0;

invalid:

    return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                  "The request body is not valid JSON%s",
                                  NULL, 0);

nomem:

    return ngx_http_idv_req_error(rq, 500, "Gateway.InternalError",
                                  "out of memory%s", NULL, 0);
}


/* a non-string value as the text the API takes, or NULL with the error */

static char *
ngx_http_idv_json_typed(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p, cJSON *item, u_char *text, size_t len)
{
    char  *s;

    switch (p->type) {

    case NGX_HTTP_IDV_T_INTEGER:
        /*
         * the integer the text writes (5, 5.0, 5e0 or 0.5e1), in its own
         * digits: a double would change those above 2^53 and round a
         * fraction away
         */

        if (!cJSON_IsNumber(item)) {
            goto wrong_type;
        }

        s = rq->alloc(rq->alloc_data, NGX_HTTP_IDV_INT64_LEN + 1);
        if (s == NULL) {
            goto nomem;
        }

        if (ngx_http_idv_json_int64(text, len, (u_char *) s) != 0) {
            goto wrong_type;
        }

        return s;

    case NGX_HTTP_IDV_T_BOOLEAN:
        if (!cJSON_IsBool(item)) {
            goto wrong_type;
        }

        return cJSON_IsTrue(item) ? "true" : "false";

    case NGX_HTTP_IDV_T_ARRAY:
    case NGX_HTTP_IDV_T_OBJECT:
        if (!(p->type == NGX_HTTP_IDV_T_ARRAY ? cJSON_IsArray(item)
                                              : cJSON_IsObject(item)))
        {
            goto wrong_type;
        }

        /*
         * the client's text as it came, checked by cJSON above: printing
         * the parsed value would lose numbers (an integer above 2^53,
         * 1e400 as null).  cJSON lets control bytes through that JSON
         * does not: those the text must not carry on.
         */

        if (ngx_http_idv_json_text_strict(text, len) != 0) {
            (void) ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                          "The request body is not valid "
                                          "JSON%s", NULL, 0);
            return NULL;
        }

        s = rq->alloc(rq->alloc_data, len + 1);
        if (s == NULL) {
            goto nomem;
        }

        memcpy(s, text, len);
        s[len] = '\0';

        return s;

    default:
        goto wrong_type;
    }

wrong_type:

    (void) ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                  p->type == NGX_HTTP_IDV_T_STRING
                                  ? "Parameter %s must be a string"
                                  : "Parameter %s has a wrong type",
                                  p->name.data, p->name.len);
    return NULL;

nomem:

    (void) ngx_http_idv_req_error(rq, 500, "Gateway.InternalError",
                                  "out of memory%s", NULL, 0);
    return NULL;
}


/*
 * *pp points at the opening quote; the string is unescaped in place (the
 * output never outruns the input, and a string without an escape is not
 * written), *pp ends after the closing quote
 */

static int
ngx_http_idv_json_string(u_char **pp, u_char *end, u_char **str, size_t *len)
{
    unsigned       flags;
    const u_char  *q;

    flags = 0;
    q = ngx_http_idv_json_string_end(*pp + 1, end, &flags);

    if (q == NULL || (flags & NGX_HTTP_IDV_JSON_NUL)) {
        return -1;                          /* \u0000 too */
    }

    *str = *pp + 1;
    *len = q - *str;

    if (flags & NGX_HTTP_IDV_JSON_ESCAPED) {
        *len = ngx_http_idv_json_unescape(*str, *str, *len);
    }

    *pp = (u_char *) q + 1;

    return 0;
}


/*
 * the end of a non-string value: a literal or number up to a delimiter,
 * an array or object up to its matching bracket (strings inside skipped);
 * cJSON then checks what lies between
 */

static u_char *
ngx_http_idv_json_skip(u_char *p, u_char *end)
{
    size_t  depth;

    if (*p != '[' && *p != '{') {
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' '
               && *p != '\t' && *p != '\r' && *p != '\n')
        {
            p++;
        }

        return p;
    }

    depth = 0;

    while (p < end) {

        switch (*p++) {

        case '[':
        case '{':
            depth++;
            break;

        case ']':
        case '}':
            if (--depth == 0) {
                return p;
            }
            break;

        case '"':
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                }
                p++;
            }

            if (p == end) {
                return NULL;
            }

            p++;
            break;
        }
    }

    return NULL;
}


/*
 * A JSON number's text as the decimal digits of the integer it writes,
 * NUL-terminated in out (NGX_HTTP_IDV_INT64_LEN + 1 bytes): 0 when the
 * text is a number of JSON's grammar whose value is an integer from -2^63
 * to 2^63 - 1, -1 otherwise.  Decided on the digits, the point moved by
 * the exponent: no double is involved.
 */

static int
ngx_http_idv_json_int64(const u_char *p, size_t len, u_char *out)
{
    int            neg, eneg;
    long           exp, point, k, first, last, n;
    size_t         i, int_at, int_len, frac_at, frac_len;
    u_char        *o;
    const char    *limit;

#define IDV_DIGIT(k)                                                          \
    ((size_t) (k) < int_len ? p[int_at + (k)] : p[frac_at + (k) - int_len])

    i = 0;
    neg = (len > 0 && p[0] == '-');
    i += neg;

    int_at = i;

    while (i < len && p[i] >= '0' && p[i] <= '9') {
        i++;
    }

    int_len = i - int_at;

    if (int_len == 0 || (int_len > 1 && p[int_at] == '0')) {
        return -1;
    }

    frac_at = i;
    frac_len = 0;

    if (i < len && p[i] == '.') {
        frac_at = ++i;

        while (i < len && p[i] >= '0' && p[i] <= '9') {
            i++;
        }

        frac_len = i - frac_at;

        if (frac_len == 0) {
            return -1;
        }
    }

    exp = 0;

    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        eneg = (i < len && p[i] == '-');

        if (i < len && (p[i] == '-' || p[i] == '+')) {
            i++;
        }

        if (i == len) {
            return -1;
        }

        /* beyond a million the point is out of any range anyway */

        while (i < len && p[i] >= '0' && p[i] <= '9') {
            if (exp < 1000000) {
                exp = exp * 10 + (p[i] - '0');
            }

            i++;
        }

        if (eneg) {
            exp = -exp;
        }
    }

    if (i != len || int_len + frac_len > 100000000) {
        return -1;
    }

    /* digits 0 .. n-1, the point after digit point - 1 */

    n = (long) (int_len + frac_len);
    point = (long) int_len + exp;

    for (first = 0; first < n && IDV_DIGIT(first) == '0'; first++) {
        /* void */
    }

    if (first == n) {
        out[0] = '0';
        out[1] = '\0';
        return 0;
    }

    for (last = n - 1; IDV_DIGIT(last) == '0'; last--) {
        /* void */
    }

    /* a digit after the point that is not 0, or more than 19 before it */

    if (last >= point || point - first > 19) {
        return -1;
    }

    o = out;

    if (neg) {
        *o++ = '-';
    }

    for (k = first; k < point; k++) {
        *o++ = (k < n) ? IDV_DIGIT(k) : '0';
    }

    *o = '\0';

#undef IDV_DIGIT

    if (point - first < 19) {
        return 0;
    }

    limit = neg ? "9223372036854775808" : "9223372036854775807";

    return memcmp(out + neg, limit, 19) <= 0 ? 0 : -1;
}


/* a NUL byte, or the escape \u0000, anywhere in a JSON text */

static int
ngx_http_idv_json_nul(const u_char *p, size_t len)
{
    const u_char  *end;

    if (memchr(p, '\0', len) != NULL) {
        return 1;
    }

    end = p + len;

    /* from one backslash to the next: memchr is vectorised */

    while (p < end) {

        p = memchr(p, '\\', end - p);

        if (p == NULL || ++p == end) {
            return 0;
        }

        if (*p == 'u' && end - p >= 5
            && p[1] == '0' && p[2] == '0' && p[3] == '0' && p[4] == '0')
        {
            return 1;
        }

        p++;                                /* the escaped character */
    }

    return 0;
}


void
ngx_http_idv_req_free(ngx_http_idv_req_t *rq)
{
    if (rq->json) {
        cJSON_Delete(rq->json);
        rq->json = NULL;
    }
}


static size_t
ngx_http_idv_form_decode(u_char *p, size_t len)
{
    u_char  *s, *d, *end, c, h, l;

    s = p;
    d = p;
    end = p + len;

    while (s < end) {
        c = *s++;

        if (c == '+') {
            *d++ = ' ';
            continue;
        }

        if (c != '%') {
            *d++ = c;
            continue;
        }

        if (end - s < 2) {
            return (size_t) -1;
        }

        h = s[0];
        l = s[1];

        h = (h >= '0' && h <= '9') ? h - '0'
            : ((h | 0x20) >= 'a' && (h | 0x20) <= 'f') ? (h | 0x20) - 'a' + 10
            : 0xff;
        l = (l >= '0' && l <= '9') ? l - '0'
            : ((l | 0x20) >= 'a' && (l | 0x20) <= 'f') ? (l | 0x20) - 'a' + 10
            : 0xff;

        if (h == 0xff || l == 0xff) {
            return (size_t) -1;
        }

        *d++ = (u_char) (h << 4 | l);
        s += 2;
    }

    return d - p;
}


int
ngx_http_idv_req_parse_form(ngx_http_idv_req_t *rq, u_char *body, size_t len)
{
    u_char                         *p, *end, *amp, *eq, *v;
    size_t                          klen, vlen;
    const ngx_http_idv_op_param_t  *prm;

    p = body;
    end = body + len;

    while (p < end) {

        amp = memchr(p, '&', end - p);
        if (amp == NULL) {
            amp = end;
        }

        if (amp == p) {
            p++;
            continue;
        }

        eq = memchr(p, '=', amp - p);

        if (eq == NULL) {
            return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                          "Parameter %s has no value",
                                          p, amp - p);
        }

        klen = ngx_http_idv_form_decode(p, eq - p);
        if (klen == (size_t) -1) {
            return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                          "The form body is not valid "
                                          "urlencoded data%s", NULL, 0);
        }

        prm = ngx_http_idv_req_lookup(rq, p, klen);
        if (prm == NULL) {
            return -1;
        }

        v = eq + 1;

        vlen = ngx_http_idv_form_decode(v, amp - v);
        if (vlen == (size_t) -1) {
            return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                          "Parameter %s is not valid "
                                          "urlencoded data",
                                          prm->name.data, prm->name.len);
        }

        if (ngx_http_idv_req_add(rq, prm, v, vlen) != 0) {
            return -1;
        }

        p = amp + 1;
    }

    return 0;
}


int
ngx_http_idv_req_validate(ngx_http_idv_req_t *rq)
{
    size_t  i;

    for (i = 0; i < rq->op->nparams; i++) {
        if (ngx_http_idv_req_validate_param(rq, &rq->op->params[i]) != 0) {
            return -1;
        }
    }

    /*
     * idv_allow_param's: the checks every string gets; a name of the
     * action's row is the row's
     */

    for (i = 0; i < rq->nextra; i++) {
        if (ngx_http_idv_op_param(rq->op, rq->extra[i].name.data,
                                  rq->extra[i].name.len)
            == NULL
            && ngx_http_idv_req_validate_param(rq, &rq->extra[i]) != 0)
        {
            return -1;
        }
    }

    return 0;
}


static int
ngx_http_idv_req_validate_param(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p)
{
    size_t                 chars;
    ngx_http_idv_param_t  *v, *alt, *a;

    v = ngx_http_idv_req_row(rq, p);

    if (v == NULL || v->value.len == 0) {

        if (p->alternative) {
            alt = ngx_http_idv_req_get(rq, p->alternative);

            if (alt != NULL && alt->value.len) {
                return 0;
            }

            /*
             * the documented exception: an authoritative check of a
             * Chinese ID card needs no ID picture when Authorize=T
             * comes with DocName and DocNo
             */

            if (strncmp(p->alternative, "IdOcrPicture", 12) == 0) {
                a = ngx_http_idv_req_get(rq, "Authorize");

                if (a && a->value.len == 1 && a->value.data[0] == 'T'
                    && (v = ngx_http_idv_req_get(rq, "DocName"))
                    && v->value.len
                    && (v = ngx_http_idv_req_get(rq, "DocNo"))
                    && v->value.len)
                {
                    return 0;
                }
            }

            if (strcmp((const char *) p->name.data, p->alternative) < 0) {
                return ngx_http_idv_req_error(rq, 400,
                                "MissingParameter",
                                "Missing parameter %s or its "
                                "alternative", p->name.data, p->name.len);
            }

            return 0;
        }

        if (ngx_http_idv_op_required(p, rq->product.data,
                                     rq->product.len))
        {
            return ngx_http_idv_req_error(rq, 400, "MissingParameter",
                                          "Missing parameter %s",
                                          p->name.data, p->name.len);
        }

        return 0;
    }

    if (p->alternative) {
        alt = ngx_http_idv_req_get(rq, p->alternative);

        if (alt != NULL && alt->value.len) {
            return ngx_http_idv_req_error(rq, 400, "DataDuplication",
                                "Parameter %s and its alternative are "
                                "both given", p->name.data, p->name.len);
        }
    }

    /*
     * the API reads every value as UTF-8: one that is not would be
     * signed, sent and answered SignatureDoesNotMatch (an image's
     * base64 is checked to be of its alphabet below)
     */

    chars = (p->flags & NGX_HTTP_IDV_P_IMAGE)
            ? v->value.len
            : ngx_http_idv_utf8_len(v->value.data, v->value.len);

    if (chars == (size_t) -1) {
        return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                      "Parameter %s is not valid UTF-8",
                                      p->name.data, p->name.len);
    }

    if (((p->name.len == 13
          && (memcmp(p->name.data, "MerchantBizId", 13) == 0
              || memcmp(p->name.data, "TransactionId", 13) == 0))
         || (p->name.len == 11
             && memcmp(p->name.data, "ProductCode", 11) == 0))
        && ngx_http_idv_id_check(v->value.data, v->value.len) != 0)
    {
        return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                      "Parameter %s must be 1 to 64 "
                                      "visible ASCII characters",
                                      p->name.data, p->name.len);
    }

    /* the documented form of the value (the table's rule) */

    if (p->rule
        && ngx_http_idv_rule_check(p->rule, v->value.data, v->value.len,
                                   chars)
           != 0)
    {
        return ngx_http_idv_rule_error(rq, p);
    }

    if ((p->flags & NGX_HTTP_IDV_P_URL)
        && ngx_http_idv_url_check(v->value.data, v->value.len,
                                  p->flags & NGX_HTTP_IDV_P_HTTPS)
           != 0)
    {
        return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                      (p->flags & NGX_HTTP_IDV_P_HTTPS)
                                      ? "Parameter %s must be an https "
                                        "URL"
                                      : "Parameter %s must be an http(s) "
                                        "URL",
                                      p->name.data, p->name.len);
    }

    if (p->flags & NGX_HTTP_IDV_P_IMAGE) {
        if (ngx_http_idv_image_check(rq, (const char *) p->name.data,
                                     v->value.data, v->value.len)
            != 0)
        {
            return -1;
        }

        /* the encoding looks for '+' '/' '=' only (ngx_http_idv_sign.c) */
        v->base64 = 1;
    }

    return 0;
}


/*
 * MerchantBizId and TransactionId go into logs, cache keys and callback
 * tokens: visible ASCII only, no quotes or backslashes
 */

static int
ngx_http_idv_id_check(const u_char *v, size_t len)
{
    size_t  i;

    if (len == 0 || len > 64) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        if (v[i] <= ' ' || v[i] >= 0x7f || v[i] == '"' || v[i] == '\\') {
            return -1;
        }
    }

    return 0;
}


/* chars: the value's length in characters */

static int
ngx_http_idv_rule_check(const ngx_http_idv_op_rule_t *rule, const u_char *v,
    size_t len, size_t chars)
{
    size_t  i;
    u_char  c;

    if (!ngx_http_idv_op_rule_value(rule, v, len)) {
        return -1;
    }

    if ((rule->min_len && chars < rule->min_len)
        || (rule->max_len && chars > rule->max_len))
    {
        return -1;
    }

    if (rule->chars == NGX_HTTP_IDV_C_ANY) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = v[i];

        if (c >= '0' && c <= '9') {
            continue;
        }

        if (rule->chars == NGX_HTTP_IDV_C_DIGIT) {
            return -1;
        }

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c == '_' && rule->chars == NGX_HTTP_IDV_C_WORD))
        {
            continue;
        }

        return -1;
    }

    return 0;
}


/*
 * "Parameter DocType must be 8 to 9 digits", "Parameter Crop must be one
 * of T, F", "Parameter ParamType must be normal": the rule from the
 * table, never the value
 */

static int
ngx_http_idv_rule_error(ngx_http_idv_req_t *rq,
    const ngx_http_idv_op_param_t *p)
{
    char                           buf[64];
    size_t                         at, n;
    const char                    *s, *w, *what;
    const ngx_http_idv_op_rule_t  *r;

    r = p->rule;

    (void) ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                  "Parameter %s must be ", p->name.data,
                                  p->name.len);

    at = strlen(rq->message);

    if (r->values) {

        /* "one of" a list; a single value is named alone */

        s = strchr(r->values + 1, ' ');

        if (s != NULL && s[1] != '\0') {
            at = ngx_http_idv_msg_add(rq, at, "one of ", 7);
        }

        s = r->values;

        for (n = 0; /* void */; n++) {
            while (*s == ' ') {
                s++;
            }

            if (*s == '\0') {
                break;
            }

            if (n) {
                at = ngx_http_idv_msg_add(rq, at, ", ", 2);
            }

            w = s;

            while (*s != ' ' && *s != '\0') {
                s++;
            }

            at = ngx_http_idv_msg_add(rq, at, w, s - w);
        }

        return -1;
    }

    what = (r->chars == NGX_HTTP_IDV_C_DIGIT) ? "digits"
           : (r->chars == NGX_HTTP_IDV_C_ALNUM) ? "letters and digits"
           : (r->chars == NGX_HTTP_IDV_C_WORD)
             ? "letters, digits and underscores"
           : "characters";

    if (r->min_len && r->min_len == r->max_len) {
        snprintf(buf, sizeof(buf), "exactly %u ", (unsigned) r->min_len);

    } else if (r->min_len && r->max_len) {
        snprintf(buf, sizeof(buf), "%u to %u ", (unsigned) r->min_len,
                 (unsigned) r->max_len);

    } else if (r->max_len) {
        snprintf(buf, sizeof(buf), "at most %u ", (unsigned) r->max_len);

    } else if (r->min_len) {
        snprintf(buf, sizeof(buf), "at least %u ", (unsigned) r->min_len);

    } else {
        buf[0] = '\0';
    }

    at = ngx_http_idv_msg_add(rq, at, buf, strlen(buf));
    (void) ngx_http_idv_msg_add(rq, at, what, strlen(what));

    return -1;
}


/* append to the message at offset at, cut at its end; the new offset */

static size_t
ngx_http_idv_msg_add(ngx_http_idv_req_t *rq, size_t at, const char *s,
    size_t len)
{
    size_t  room;

    room = sizeof(rq->message) - 1 - at;

    if (len > room) {
        len = room;
    }

    memcpy(rq->message + at, s, len);
    at += len;
    rq->message[at] = '\0';

    return at;
}


static int
ngx_http_idv_url_check(const u_char *v, size_t len, int https)
{
    size_t  n;

    if (!https && len > 7 && strncasecmp((const char *) v, "http://", 7) == 0)
    {
        n = 7;

    } else if (len > 8 && strncasecmp((const char *) v, "https://", 8) == 0) {
        n = 8;

    } else {
        return -1;
    }

    /* a host must follow the scheme */

    if (v[n] == '/' || v[n] == '?' || v[n] == '#' || v[n] == ' ') {
        return -1;
    }

    for ( /* void */ ; n < len; n++) {
        if (v[n] <= ' ' || v[n] == 0x7f) {
            return -1;
        }
    }

    return 0;
}


/* decode n bytes starting at decoded offset off; base64 is random access */

static int
ngx_http_idv_b64_at(const u_char *b64, size_t len, size_t off, u_char *out,
    size_t n)
{
    size_t   q, k, i;
    u_char   quad[3];
    uint32_t v;

    while (n) {
        q = off / 3;
        k = off % 3;

        if (q * 4 + 4 > len) {
            return -1;
        }

        v = 0;

        for (i = 0; i < 4; i++) {
            u_char  c = b64[q * 4 + i];

            v = v << 6 | (c == '=' ? 0 : ngx_http_idv_b64_dec[c]);
        }

        quad[0] = (u_char) (v >> 16);
        quad[1] = (u_char) (v >> 8);
        quad[2] = (u_char) v;

        for (i = k; i < 3 && n; i++, n--) {
            *out++ = quad[i];
            off++;
        }
    }

    return 0;
}


static int
ngx_http_idv_image_size(const u_char *b64, size_t len, size_t size,
    unsigned *w, unsigned *h)
{
    size_t  off, seg;
    u_char  b[9];

    if (ngx_http_idv_b64_at(b64, len, 0, b, 8) != 0) {
        return -1;
    }

    if (memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) {

        /* the IHDR chunk comes first: width and height at 16 and 20 */

        if (size < 24 || ngx_http_idv_b64_at(b64, len, 12, b, 4) != 0
            || memcmp(b, "IHDR", 4) != 0
            || ngx_http_idv_b64_at(b64, len, 16, b, 8) != 0)
        {
            return -1;
        }

        *w = (unsigned) b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
        *h = (unsigned) b[4] << 24 | b[5] << 16 | b[6] << 8 | b[7];

        return 0;
    }

    if (b[0] != 0xff || b[1] != 0xd8 || b[2] != 0xff) {
        return -1;
    }

    /* walk the JPEG segments to the first start-of-frame */

    off = 2;

    for ( ;; ) {
        if (off + 4 > size || ngx_http_idv_b64_at(b64, len, off, b, 4) != 0) {
            return -1;
        }

        if (b[0] != 0xff) {
            return -1;
        }

        if (b[1] == 0xff) {
            off++;                          /* fill byte */
            continue;
        }

        if (b[1] == 0xd9 || b[1] == 0xda) {
            return -1;                      /* EOI or SOS before a frame */
        }

        if (b[1] == 0x01 || (b[1] >= 0xd0 && b[1] <= 0xd7)) {
            off += 2;                       /* markers without a length */
            continue;
        }

        seg = (size_t) b[2] << 8 | b[3];

        if (seg < 2) {
            return -1;
        }

        if (b[1] >= 0xc0 && b[1] <= 0xcf
            && b[1] != 0xc4 && b[1] != 0xc8 && b[1] != 0xcc)
        {
            if (off + 9 > size
                || ngx_http_idv_b64_at(b64, len, off + 4, b, 5) != 0)
            {
                return -1;
            }

            *h = (unsigned) b[1] << 8 | b[2];
            *w = (unsigned) b[3] << 8 | b[4];

            return 0;
        }

        off += 2 + seg;
    }
}


int
ngx_http_idv_image_check(ngx_http_idv_req_t *rq, const char *name,
    const u_char *b64, size_t len)
{
    size_t      i, pad, size;
    unsigned    w, h, lo, hi;

    /*
     * The documented 1 MB is a transfer limit: it holds for the base64
     * text as sent, a third larger than the image it encodes (so it
     * bounds the decoded size too).
     */

    if (len > NGX_HTTP_IDV_IMAGE_MAX) {
        return ngx_http_idv_req_error(rq, 400, "ToolargeImage",
                                      "Image %s is larger than 1 MB as "
                                      "base64 text",
                                      (const u_char *) name, strlen(name));
    }

    /* strict base64: the standard alphabet, padded to whole quads */

    if (len == 0 || len % 4 != 0) {
        goto bad;
    }

    pad = (b64[len - 1] == '=') + (b64[len - 2] == '=');

    i = 0;

#if (defined __SSE2__)
    {
        __m128i  far;

        /*
         * 32 bytes at a time, each byte's distance from the alphabet
         * (A-Z a-z, / 0-9 from 0x2f to 0x39, +; 0 in it): the largest
         * distance is kept over the whole value and looked at once, after
         * the last block (which byte is wrong does not matter)
         */

#define idv_b64_far(v)                                                        \
        _mm_min_epu8(_mm_min_epu8(                                            \
            _mm_subs_epu8(_mm_sub_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)),  \
                                       _mm_set1_epi8('a')),                   \
                          _mm_set1_epi8('z' - 'a')),                          \
            _mm_subs_epu8(_mm_sub_epi8(v, _mm_set1_epi8('/')),                \
                          _mm_set1_epi8('9' - '/'))),                         \
            _mm_xor_si128(v, _mm_set1_epi8('+')))

        far = _mm_setzero_si128();

        for ( /* void */ ; i + 32 <= len - pad; i += 32) {
            far = _mm_max_epu8(far, _mm_max_epu8(
                      idv_b64_far(_mm_loadu_si128((const __m128i *)
                                                  (b64 + i))),
                      idv_b64_far(_mm_loadu_si128((const __m128i *)
                                                  (b64 + i + 16)))));
        }

#undef idv_b64_far

        if (_mm_movemask_epi8(_mm_cmpeq_epi8(far, _mm_setzero_si128()))
            != 0xffff)
        {
            goto bad;
        }
    }
#endif

    for ( /* void */ ; i < len - pad; i++) {
        if (ngx_http_idv_b64_dec[b64[i]] == IDV_B64_BAD) {
            goto bad;
        }
    }

    size = len / 4 * 3 - pad;

    if (ngx_http_idv_image_size(b64, len, size, &w, &h) != 0) {
        return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                      "Image %s is not a JPEG or PNG image",
                                      (const u_char *) name, strlen(name));
    }

    lo = w < h ? w : h;
    hi = w < h ? h : w;

    if (hi < NGX_HTTP_IDV_IMAGE_MIN_LONG || lo < NGX_HTTP_IDV_IMAGE_MIN_SHORT
        || hi > NGX_HTTP_IDV_IMAGE_MAX_LONG || lo > NGX_HTTP_IDV_IMAGE_MAX_SHORT)
    {
        return ngx_http_idv_req_error(rq, 400, "UnqualifiedPhoto",
                                      "Image %s must be between 640x480 and "
                                      "1920x1080 pixels",
                                      (const u_char *) name, strlen(name));
    }

    return 0;

bad:

    return ngx_http_idv_req_error(rq, 400, "InvalidParameter",
                                  "Image %s is not valid base64",
                                  (const u_char *) name, strlen(name));
}
