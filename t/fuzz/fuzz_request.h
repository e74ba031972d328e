
/*
 * ngx_http_idv_module: the driver of the two request-body targets.
 *
 * Input: "Action[ ProductCode]\n" and then the backend's body.  The first
 * line picks the operation (an unknown name picks one by its bytes) and
 * the product code the location would configure.  The body goes through
 * the same steps as in ngx_http_idv_process(): parse, the location's
 * ProductCode, validate; an accepted request is then signed with both
 * signature versions and every output checked (fuzz_sign_check.h).
 *
 * Invariants: a rejected body gives status 400 or 500, an API code and a
 * printable message that names at most a parameter; an accepted one has
 * only parameters of the operation, each once, with the table's
 * placement and PII flags.
 */


#ifndef _IDV_FUZZ_REQUEST_H_INCLUDED_
#define _IDV_FUZZ_REQUEST_H_INCLUDED_


#include <stdint.h>
#include <cjson/cJSON.h>

#include "fuzz.h"
#include "fuzz_sign_check.h"
#include "ngx_http_idv_request.h"


typedef int (*fuzz_parse_pt)(ngx_http_idv_req_t *rq, u_char *body,
    size_t len);


static inline void
fuzz_check_error(const ngx_http_idv_req_t *rq)
{
    size_t  i, len;

    FUZZ_CHECK(rq->status == 400 || rq->status == 500);
    FUZZ_CHECK(rq->code != NULL && rq->code[0] != '\0');

    len = strnlen(rq->message, sizeof(rq->message));
    FUZZ_CHECK(len > 0 && len < sizeof(rq->message));

    for (i = 0; i < len; i++) {
        FUZZ_CHECK(rq->message[i] >= 0x20 && rq->message[i] < 0x7f);
    }
}


static inline void
fuzz_check_params(const ngx_http_idv_req_t *rq)
{
    size_t                          i, j;
    const ngx_http_idv_param_t     *v;
    const ngx_http_idv_op_param_t  *p;

    FUZZ_CHECK(rq->nparams <= rq->op->nparams + NGX_HTTP_IDV_EXTRA_PARAMS);
    FUZZ_CHECK(rq->nparams == 0 || rq->params != NULL);

    for (i = 0; i < rq->nparams; i++) {
        v = &rq->params[i];

        p = ngx_http_idv_op_param(rq->op, v->key.data, v->key.len);
        FUZZ_CHECK(p != NULL && p->name.data == v->key.data);

        FUZZ_CHECK(v->body == ((p->flags & NGX_HTTP_IDV_P_BODY) != 0));
        FUZZ_CHECK(v->pii == ((p->flags & NGX_HTTP_IDV_P_PII) != 0));
        FUZZ_CHECK(v->value.len == 0 || v->value.data != NULL);

        for (j = 0; j < i; j++) {
            FUZZ_CHECK(rq->params[j].key.data != v->key.data);
        }
    }
}


/*
 * An accepted JSON body is one JSON text and nothing after it, with no
 * NUL (cJSON would end a value there).  The parser works in place, so
 * the original bytes are parsed again here with cJSON and compared
 * member by member: every member is a parameter with the value cJSON
 * decodes (strings byte for byte, integers as "%lld", booleans as
 * true/false, arrays and objects as cJSON_PrintUnformatted() gives them).
 */

static inline void
fuzz_check_json(const ngx_http_idv_req_t *rq, const u_char *body,
    size_t len)
{
    char                        num[24], *printed, *reprinted;
    size_t                      i, n, vlen;
    cJSON                      *root, *item, *again;
    const char                 *end, *last, *want;
    ngx_http_idv_param_t       *v;

    FUZZ_CHECK(memchr(body, '\0', len) == NULL);

    for (i = 0; i + 1 < len; i++) {
        if (body[i] == '\\') {
            FUZZ_CHECK(!(len - i >= 6 && memcmp(body + i + 1, "u0000", 5) == 0));
            i++;
        }
    }

    root = cJSON_ParseWithLengthOpts((const char *) body, len, &end, 0);
    FUZZ_CHECK(root != NULL);
    FUZZ_CHECK(cJSON_IsObject(root));

    last = (const char *) body + len;

    while (end < last
           && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
    {
        end++;
    }

    FUZZ_CHECK(end == last);

    n = 0;

    for (item = root->child; item; item = item->next) {
        n++;

        v = ngx_http_idv_req_get((ngx_http_idv_req_t *) rq, item->string);
        FUZZ_CHECK(v != NULL);

        printed = NULL;

        if (cJSON_IsString(item)) {
            want = item->valuestring;

        } else if (cJSON_IsNumber(item)) {
            /*
             * an integer in decimal digits, within 64 bits, without a
             * sign on zero or a leading zero, that reads as the same
             * double as the backend's text (the same number, rounded the
             * same way)
             */

            FUZZ_CHECK(v->value.len > 0 && v->value.len < sizeof(num));
            memcpy(num, v->value.data, v->value.len);
            num[v->value.len] = '\0';

            i = (num[0] == '-');
            FUZZ_CHECK(num[i] >= '0' && num[i] <= '9');
            FUZZ_CHECK(num[i] != '0' || (num[i + 1] == '\0' && i == 0));

            for ( /* void */ ; num[i]; i++) {
                FUZZ_CHECK(num[i] >= '0' && num[i] <= '9');
            }

            FUZZ_CHECK(v->value.len - (num[0] == '-') < 19
                       || strcmp(num + (num[0] == '-'),
                                 num[0] == '-' ? "9223372036854775808"
                                               : "9223372036854775807")
                          <= 0);
            FUZZ_CHECK(strtod(num, NULL) == item->valuedouble);
            continue;

        } else if (cJSON_IsBool(item)) {
            want = cJSON_IsTrue(item) ? "true" : "false";

        } else {
            /*
             * the backend's own text, not a re-serialisation: a piece
             * of the body that parses to the same value, with no control
             * byte JSON rules out
             */

            FUZZ_CHECK(cJSON_IsArray(item) || cJSON_IsObject(item));
            FUZZ_CHECK(v->value.len > 0 && v->value.len <= len);

            for (i = 0; i + v->value.len <= len; i++) {
                if (memcmp(body + i, v->value.data, v->value.len) == 0) {
                    break;
                }
            }

            FUZZ_CHECK(i + v->value.len <= len);

            for (i = 0; i < v->value.len; i++) {
                FUZZ_CHECK(v->value.data[i] >= 0x20
                           || v->value.data[i] == '\t'
                           || v->value.data[i] == '\r'
                           || v->value.data[i] == '\n');
            }

            again = cJSON_ParseWithLengthOpts((const char *) v->value.data,
                                              v->value.len, &end, 0);
            FUZZ_CHECK(again != NULL
                       && end == (const char *) v->value.data
                                 + v->value.len);

            printed = cJSON_PrintUnformatted(item);
            reprinted = cJSON_PrintUnformatted(again);
            FUZZ_CHECK(printed != NULL && reprinted != NULL
                       && strcmp(printed, reprinted) == 0);

            cJSON_free(printed);
            cJSON_free(reprinted);
            cJSON_Delete(again);

            continue;
        }

        vlen = strlen(want);
        FUZZ_CHECK(fuzz_str_eq(&v->value, (const u_char *) want, vlen));

        cJSON_free(printed);
    }

    FUZZ_CHECK(n == rq->nparams);

    cJSON_Delete(root);
}


static inline void
fuzz_sign_request(ngx_http_idv_req_t *rq, int algorithm)
{
    ngx_http_idv_sign_t    s;
    ngx_http_idv_param_t  *orig;

    orig = fuzz_alloc(NULL, (rq->nparams + 1) * sizeof(ngx_http_idv_param_t));
    if (rq->nparams) {
        memcpy(orig, rq->params, rq->nparams * sizeof(ngx_http_idv_param_t));
    }

    memset(&s, 0, sizeof(s));

    s.algorithm = algorithm;
    s.access_key_id.data = (u_char *) "testid";
    s.access_key_id.len = 6;
    s.access_key_secret.data = (u_char *) "testsecret";
    s.access_key_secret.len = 10;
    s.host.data = (u_char *) "cloudauth-intl.cn-hongkong.aliyuncs.com";
    s.host.len = sizeof("cloudauth-intl.cn-hongkong.aliyuncs.com") - 1;
    s.action = rq->op->name;
    s.version.data = (u_char *) NGX_HTTP_IDV_API_VERSION;
    s.version.len = sizeof(NGX_HTTP_IDV_API_VERSION) - 1;
    s.timestamp.data = (u_char *) "2024-05-20T08:30:00Z";
    s.timestamp.len = 20;
    s.nonce.data = (u_char *) "6a1f0c2e9b7d4e51a3c8f0d2b4e6a8c0";
    s.nonce.len = 32;
    s.params = rq->params;
    s.nparams = rq->nparams;
    s.form = (rq->op->flags & NGX_HTTP_IDV_OP_FORM) ? 1 : 0;
    s.alloc = fuzz_alloc;

    FUZZ_CHECK(ngx_http_idv_sign(&s) == 0);

    fuzz_check_signed(&s, orig, (rq->op->flags & NGX_HTTP_IDV_OP_FORM) != 0);
}


static inline int
fuzz_request(const uint8_t *data, size_t size, fuzz_parse_pt parse,
    int json)
{
    u_char                   *body, *orig, *nl, *sp;
    size_t                    len, h;
    const u_char             *name, *end;
    ngx_http_idv_str_t        product;
    ngx_http_idv_req_t        rq;
    ngx_http_idv_param_t     *p;
    const ngx_http_idv_op_t  *op;

    end = data + size;
    nl = memchr(data, '\n', size);

    if (nl == NULL) {
        return 0;
    }

    name = data;
    sp = memchr(data, ' ', nl - data);
    len = (sp ? sp : nl) - data;

    op = ngx_http_idv_op_find(name, len);

    if (op == NULL) {
        for (h = 0; len--; name++) {
            h = h * 31 + *name;
        }

        op = &ngx_http_idv_ops[h % ngx_http_idv_nops];
    }

    product.len = sp ? (size_t) (nl - sp - 1) : 0;
    product.data = sp ? fuzz_dup(sp + 1, product.len) : NULL;

    /* the body, exactly as long as it is: ASan sees any overread */

    len = end - nl - 1;

    if (len) {
        body = fuzz_dup(nl + 1, len);

    } else if (json) {
        /* ngx_http_idv_process() parses an empty JSON body as "{}" */
        body = fuzz_dup((u_char *) "{}", 2);
        len = 2;

    } else {
        body = (u_char *) "";
    }

    memset(&rq, 0, sizeof(rq));
    rq.op = op;
    rq.alloc = fuzz_alloc;

    /* both parsers decode in place: the original for the checks below */
    orig = fuzz_dup(body, len);

    if (parse(&rq, body, len) != 0) {
        fuzz_check_error(&rq);
        goto done;
    }

    if (json) {
        fuzz_check_json(&rq, orig, len);
    }

    fuzz_check_params(&rq);

    /* the location's product code, as ngx_http_idv_process() sets it */

    p = ngx_http_idv_req_get(&rq, "ProductCode");

    if (product.len) {
        if (p && !fuzz_str_eq(&p->value, product.data, product.len)) {
            goto done;
        }

        if (ngx_http_idv_req_set(&rq, "ProductCode", product.data,
                                 product.len)
            != 0)
        {
            fuzz_check_error(&rq);
            goto done;
        }

        rq.product = product;

    } else if (p) {
        rq.product = p->value;
    }

    fuzz_check_params(&rq);

    if (ngx_http_idv_req_validate(&rq) != 0) {
        fuzz_check_error(&rq);
        goto done;
    }

    fuzz_sign_request(&rq, NGX_HTTP_IDV_SIGN_V3);
    fuzz_sign_request(&rq, NGX_HTTP_IDV_SIGN_V1);

done:

    ngx_http_idv_req_free(&rq);
    fuzz_free_all();

    return 0;
}


#endif /* _IDV_FUZZ_REQUEST_H_INCLUDED_ */
