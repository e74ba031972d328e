
/*
 * ngx_http_idv_module: the request model (pure core).
 *
 * Turns the backend's JSON object or form body into the validated
 * parameter list of one operation.  Errors name the parameter, never its
 * value: the values are identity documents.
 */


#ifndef _NGX_HTTP_IDV_REQUEST_H_INCLUDED_
#define _NGX_HTTP_IDV_REQUEST_H_INCLUDED_


#include "ngx_http_idv_core.h"
#include "ngx_http_idv_ops.h"


/* extra parameter slots the gateway may add (ProductCode, callbacks) */
#define NGX_HTTP_IDV_EXTRA_PARAMS   4

/* the documented 1 MB transfer limit, on the base64 text of an image */
#define NGX_HTTP_IDV_IMAGE_MAX      (1024 * 1024)
/* pixel bounds of EkycVerify images, either orientation */
#define NGX_HTTP_IDV_IMAGE_MIN_LONG   640
#define NGX_HTTP_IDV_IMAGE_MIN_SHORT  480
#define NGX_HTTP_IDV_IMAGE_MAX_LONG   1920
#define NGX_HTTP_IDV_IMAGE_MAX_SHORT  1080


typedef struct {
    /* input */
    const ngx_http_idv_op_t    *op;
    /* parameters idv_allow_param adds to the action (none of its row) */
    const ngx_http_idv_op_param_t  *extra;
    size_t                      nextra;
    ngx_http_idv_str_t          product;    /* idv_product_code or empty */
    ngx_http_idv_alloc_pt       alloc;
    void                       *alloc_data;

    /* output */
    ngx_http_idv_param_t       *params;
    size_t                      nparams;

    /*
     * the operation's row of each parameter: rows[row] - 1 is its index
     * in params (0: not given), as long as params is rows_of and not
     * reordered (signing sorts it)
     */
    uint16_t                   *rows;
    ngx_http_idv_param_t       *rows_of;

    void                       *json;       /* parsed tree, freed by
                                               ngx_http_idv_req_free() */

    /* error: HTTP status, API code, message naming a parameter */
    int                         status;
    const char                 *code;
    char                        message[160];
} ngx_http_idv_req_t;


/*
 * Both parsers return 0 on success and -1 with rq->status, rq->code and
 * rq->message set.  String values point into the body where possible.
 */
int ngx_http_idv_req_parse_json(ngx_http_idv_req_t *rq, u_char *body,
    size_t len);
int ngx_http_idv_req_parse_form(ngx_http_idv_req_t *rq, u_char *body,
    size_t len);

void ngx_http_idv_req_free(ngx_http_idv_req_t *rq);

/*
 * required set, either/or pairs, UTF-8, the documented form of values
 * (the table's rules), image and URL checks
 */
int ngx_http_idv_req_validate(ngx_http_idv_req_t *rq);

/* the value of a parameter, or NULL */
ngx_http_idv_param_t *ngx_http_idv_req_get(ngx_http_idv_req_t *rq,
    const char *name);

/*
 * add a parameter the client named (an SDK request's), refused like the
 * parsers refuse an unknown or repeated one
 */
int ngx_http_idv_req_add_param(ngx_http_idv_req_t *rq, u_char *key,
    size_t klen, u_char *value, size_t len);

/* add or replace a gateway parameter (uses the extra slots) */
int ngx_http_idv_req_set(ngx_http_idv_req_t *rq, const char *name,
    u_char *value, size_t len);

/*
 * Image checks on base64 text: decodes it in pieces without keeping the
 * decoded bytes; returns 0 or -1 with the error set.
 */
int ngx_http_idv_image_check(ngx_http_idv_req_t *rq, const char *name,
    const u_char *b64, size_t len);


#endif /* _NGX_HTTP_IDV_REQUEST_H_INCLUDED_ */
