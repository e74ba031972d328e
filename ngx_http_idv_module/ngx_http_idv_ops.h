
/*
 * ngx_http_idv_module: the operations table.
 *
 * One row per action of cloudauth-intl 2022-08-09.  The rows are
 * generated from data/actions.json by gen_ops.pl (placement and type)
 * merged with data/ops-overlay.json (required sets, PII, image and URL
 * checks, what the action does to transactions, retry safety, product
 * codes, the documented form of values); t/unit/test_ops.c proves the
 * table and the JSON agree.
 */


#ifndef _NGX_HTTP_IDV_OPS_H_INCLUDED_
#define _NGX_HTTP_IDV_OPS_H_INCLUDED_


#include "ngx_http_idv_core.h"


/* parameter types as in the API metadata */
#define NGX_HTTP_IDV_T_STRING       0
#define NGX_HTTP_IDV_T_INTEGER      1
#define NGX_HTTP_IDV_T_BOOLEAN      2
#define NGX_HTTP_IDV_T_ARRAY        3       /* sent as a JSON string */
#define NGX_HTTP_IDV_T_OBJECT       4       /* sent as a JSON string */

/* parameter flags */
#define NGX_HTTP_IDV_P_BODY         0x01    /* in: formData */
#define NGX_HTTP_IDV_P_PII          0x02    /* never logged or echoed */
#define NGX_HTTP_IDV_P_IMAGE        0x04    /* base64 JPEG/PNG, checked */
#define NGX_HTTP_IDV_P_URL          0x08    /* must be an http(s) URL */
#define NGX_HTTP_IDV_P_REQUIRED     0x10    /* required for every product */
#define NGX_HTTP_IDV_P_HTTPS        0x20    /* a URL that must be https */

/* character classes of a rule */
#define NGX_HTTP_IDV_C_ANY          0
#define NGX_HTTP_IDV_C_DIGIT        1       /* 0-9 */
#define NGX_HTTP_IDV_C_ALNUM        2       /* A-Z a-z 0-9 */
#define NGX_HTTP_IDV_C_WORD         3       /* A-Z a-z 0-9 _ */

/*
 * operation flags; the overlay's comment says which action has which and
 * why.  CREATES_TX: a successful answer carries a new Result.TransactionId
 * for later calls.  READS_TX, READS_BIZ: the TransactionId, MerchantBizId
 * parameter names an earlier transaction.  RETRY_SAFE: a repeat after a
 * transport failure, throttling or a transient 5xx cannot bill or change
 * anything twice.  RESULT: the final answer is the authoritative result.
 */
#define NGX_HTTP_IDV_OP_BILLABLE    0x01    /* a repeat may bill twice */
#define NGX_HTTP_IDV_OP_FORM        0x02    /* SDK always sends a form body */
#define NGX_HTTP_IDV_OP_CREATES_TX  0x04    /* issues a TransactionId */
#define NGX_HTTP_IDV_OP_READS_TX    0x08    /* reads by TransactionId */
#define NGX_HTTP_IDV_OP_READS_BIZ   0x10    /* reads by MerchantBizId */
#define NGX_HTTP_IDV_OP_RETRY_SAFE  0x20    /* a repeat cannot bill twice */
#define NGX_HTTP_IDV_OP_RESULT      0x40    /* the authoritative result */


/*
 * The documented form of a parameter's value, where the documents state
 * one: a value outside it is refused before the call.  Lengths count
 * characters (UTF-8 code points); 0 means no limit.
 */

typedef struct {
    uint16_t                    min_len;
    uint16_t                    max_len;
    uint8_t                     chars;      /* NGX_HTTP_IDV_C_* */
    /* the documented values, space-separated, e.g. " T F ", or NULL */
    const char                 *values;
} ngx_http_idv_op_rule_t;


typedef struct {
    ngx_http_idv_str_t          name;
    uint8_t                     type;
    uint8_t                     flags;
    /* space-separated product codes for which the parameter is required,
       e.g. " eKYC IDR_GLOBAL ", or NULL */
    const char                 *required_for;
    /* the parameter of the same image/document given another way
       (FacePictureBase64 <-> FacePictureUrl), or NULL */
    const char                 *alternative;
    const ngx_http_idv_op_rule_t  *rule;    /* or NULL */
} ngx_http_idv_op_param_t;


typedef struct {
    ngx_http_idv_str_t          name;
    const ngx_http_idv_op_param_t  *params;     /* sorted by name (bytes) */
    size_t                      nparams;
    unsigned                    flags;
    /* space-separated product codes the action documents, e.g.
       " eKYC_MIN ", or NULL: no ProductCode, or its values unknown */
    const char                 *products;
} ngx_http_idv_op_t;


extern const ngx_http_idv_op_t  ngx_http_idv_ops[];
extern const size_t             ngx_http_idv_nops;


const ngx_http_idv_op_t *ngx_http_idv_op_find(const u_char *name, size_t len);
const ngx_http_idv_op_param_t *ngx_http_idv_op_param(
    const ngx_http_idv_op_t *op, const u_char *name, size_t len);
int ngx_http_idv_op_required(const ngx_http_idv_op_param_t *p,
    const u_char *product, size_t len);
int ngx_http_idv_op_product_known(const ngx_http_idv_op_t *op,
    const u_char *product, size_t len);
int ngx_http_idv_op_rule_value(const ngx_http_idv_op_rule_t *rule,
    const u_char *value, size_t len);


#endif /* _NGX_HTTP_IDV_OPS_H_INCLUDED_ */
