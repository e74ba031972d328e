
/*
 * ngx_http_idv_module: the JSON text of the gateway's own answers
 * (pure core).
 *
 * Every value the gateway writes into an answer goes through
 * ngx_http_idv_json_escape(): the result is valid JSON and valid UTF-8
 * whatever the bytes (a tenant from a header, a code from the service),
 * so that no value can end a string early or add members.  Each writer
 * returns the length it writes; with dst NULL it writes nothing and
 * returns the length it would write.
 */


#ifndef _NGX_HTTP_IDV_JSON_H_INCLUDED_
#define _NGX_HTTP_IDV_JSON_H_INCLUDED_


#include "ngx_http_idv_core.h"


#define NGX_HTTP_IDV_REQUEST_ID_LEN  32


/* the "Gateway" member of the gateway's answers */

typedef struct {
    ngx_http_idv_str_t          action;
    ngx_http_idv_str_t          product;
    ngx_http_idv_str_t          tenant;
    size_t                      attempts;
    size_t                      upstream_status;
    size_t                      upstream_ms;
    int                         passed;     /* 0 unknown, 1 yes, 2 no */
    unsigned                    cached:1;
} ngx_http_idv_gateway_t;


/* the members of the service's envelope the gateway reads */

typedef struct {
    ngx_http_idv_str_t          code;           /* each a string's text */
    ngx_http_idv_str_t          request_id;     /* between its quotes, */
    ngx_http_idv_str_t          message;        /* escapes as written; */
    ngx_http_idv_str_t          transaction_id; /* data NULL: no such */
    ngx_http_idv_str_t          passed;         /* string member */
} ngx_http_idv_envelope_t;


/* what ngx_http_idv_json_string_end() saw in a string */
#define NGX_HTTP_IDV_JSON_ESCAPED   0x01        /* a backslash */
#define NGX_HTTP_IDV_JSON_NUL       0x02        /* the escape \u0000 */


/* UTF-8: one sequence's length or 0; a text's characters or (size_t) -1 */
size_t ngx_http_idv_utf8_seq(const u_char *p, size_t len);
size_t ngx_http_idv_utf8_len(const u_char *p, size_t len);

/* JSON text that cJSON parsed: 0 when it has no forbidden control bytes */
int ngx_http_idv_json_text_strict(const unsigned char *p, size_t len);

/*
 * The one JSON scanner.  ngx_http_idv_json_string_end(): p is past a
 * string's opening quote; the closing quote, or NULL when the string is
 * not valid JSON (unterminated, a control byte, a bad escape, a lone
 * surrogate); *flags gets NGX_HTTP_IDV_JSON_*.  Plain bytes are skipped
 * 32 at a time, then 16.
 */
const u_char *ngx_http_idv_json_string_end(const u_char *p,
    const u_char *end, unsigned *flags);

/* past JSON white space */
const u_char *ngx_http_idv_json_ws(const u_char *p, const u_char *end);

/*
 * a scanned string's value: escapes decoded into dst (dst may be src:
 * the value is never longer than its text, and bytes before the first
 * escape are not written), up to its first NUL as cJSON's strings end;
 * returns the value's length
 */
size_t ngx_http_idv_json_unescape(u_char *dst, const u_char *src,
    size_t len);

/*
 * The service's envelope, validated without building anything: one JSON
 * object (RFC 8259, nested at most NGX_HTTP_IDV_JSON_DEPTH deep), white
 * space around it, with a string member Code.  Picks out Code,
 * RequestId, Message, Result.TransactionId and Result.Passed (the first
 * member of each name, as cJSON_GetObjectItemCaseSensitive() finds it).
 * 0, or -1 when the text is not such an envelope.
 */
#define NGX_HTTP_IDV_JSON_DEPTH     512

int ngx_http_idv_json_envelope(const u_char *p, size_t len,
    ngx_http_idv_envelope_t *env);

/*
 * the bytes as the inside of a JSON string: '"' and '\' escaped, control
 * characters as \u00XX, a byte that is not part of well-formed UTF-8 as
 * \ufffd
 */
size_t ngx_http_idv_json_escape(u_char *dst, const u_char *src, size_t len);

/* "Gateway":{...} */
size_t ngx_http_idv_json_gateway(u_char *dst,
    const ngx_http_idv_gateway_t *gw);

/* {"RequestId":"…","Code":"…","Message":"…","Gateway":{…}} */
size_t ngx_http_idv_json_error(u_char *dst, const u_char *request_id,
    const u_char *code, size_t code_len, const u_char *message,
    size_t message_len, const ngx_http_idv_gateway_t *gw);

/* the service's own shape: {"RequestId":…,"Message":…,"HostId":…,"Code":…} */
size_t ngx_http_idv_json_service_error(u_char *dst, const u_char *request_id,
    const u_char *code, size_t code_len, const u_char *message,
    size_t message_len, const u_char *host, size_t host_len);


#endif /* _NGX_HTTP_IDV_JSON_H_INCLUDED_ */
