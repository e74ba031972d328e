
/*
 * JSON text passed on as it came (an Ext* member of an answer, an array
 * parameter of a request): cJSON, which checked that it parses, lets
 * control bytes through that JSON does not allow.
 */


#ifndef _NGX_HTTP_IDV_JSON_TEXT_H_INCLUDED_
#define _NGX_HTTP_IDV_JSON_TEXT_H_INCLUDED_


#include <stddef.h>


/*
 * JSON's rule for the bytes below 0x20: none inside a string, only
 * white space outside.  0 when the text keeps it.
 */

static inline int
ngx_http_idv_json_text_strict(const unsigned char *p, size_t len)
{
    int                   in_string;
    const unsigned char  *end;

    in_string = 0;

    for (end = p + len; p < end; p++) {

        if (in_string) {
            if (*p < 0x20) {
                return -1;
            }

            if (*p == '\\') {
                p++;

            } else if (*p == '"') {
                in_string = 0;
            }

            continue;
        }

        if (*p == '"') {
            in_string = 1;

        } else if (*p < 0x20 && *p != ' ' && *p != '\t' && *p != '\r'
                   && *p != '\n')
        {
            return -1;
        }
    }

    return 0;
}


#endif /* _NGX_HTTP_IDV_JSON_TEXT_H_INCLUDED_ */
