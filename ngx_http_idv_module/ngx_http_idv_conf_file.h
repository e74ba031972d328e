
/*
 * ngx_http_idv_module: the secrets files read at configuration time.
 *
 * The credentials file (idv_credentials), the tenants' key file
 * (idv_tenant_keys) and the callback token keys (idv_callback_key) are
 * read the same way: whole, by the process that loads the configuration,
 * from a regular file of bounded size, with a warning when anybody who
 * need not may read or change it.  Each format's parser takes the lines
 * from here and keeps only its own semantics.
 *
 * No message shows a byte of a file: a line is named by its number.
 */


#ifndef _NGX_HTTP_IDV_CONF_FILE_H_INCLUDED_
#define _NGX_HTTP_IDV_CONF_FILE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct {
    ngx_conf_t                 *cf;
    const char                 *directive;      /* begins every message */
    ngx_str_t                   name;           /* the full name */
    u_char                     *start;          /* the file's bytes */
    u_char                     *end;
    u_char                     *pos;            /* the next line */
    ngx_uint_t                  line;           /* the last line's number */
} ngx_http_idv_conf_file_t;


typedef ngx_int_t (*ngx_http_idv_conf_file_handler_pt)(
    ngx_http_idv_conf_file_t *file, void *data);


/*
 * Reads the file "name" (relative to the configuration prefix) of at most
 * "max" bytes, a multiple of 1024, and has "handler" parse it; then wipes
 * the bytes.  NGX_ERROR after an [emerg]; a file that others may read or
 * write is parsed after a [warn].
 */
ngx_int_t ngx_http_idv_conf_file_parse(ngx_conf_t *cf, const char *directive,
    ngx_str_t *name, size_t max, ngx_http_idv_conf_file_handler_pt handler,
    void *data);

/*
 * The next line that says something, blanks trimmed; empty lines and
 * lines that start with "#" or ";" are skipped.  NGX_DONE at the end.
 */
ngx_int_t ngx_http_idv_conf_file_line(ngx_http_idv_conf_file_t *file,
    ngx_str_t *line);

/*
 * A line's blank-separated fields, up to "max"; a field that starts with
 * "#" starts a comment.  Returns their number, max + 1 if there are more.
 */
ngx_uint_t ngx_http_idv_conf_file_fields(ngx_str_t *line, ngx_str_t *fields,
    ngx_uint_t max);

/*
 * [emerg] "DIRECTIVE: FILE:LINE: what is wrong", or, with line 0,
 * "DIRECTIVE: "FILE" what is wrong".
 */
void ngx_cdecl ngx_http_idv_conf_file_error(ngx_http_idv_conf_file_t *file,
    ngx_uint_t line, const char *fmt, ...);


#endif /* _NGX_HTTP_IDV_CONF_FILE_H_INCLUDED_ */
