
/*
 * libFuzzer target: the form body parser, ngx_http_idv_req_parse_form()
 * (urlencoded, decoded in place), then validation and signing of what it
 * accepts (fuzz_request.h).
 *
 * Input: "Action[ ProductCode]\nkey=value&key=value..."
 */


#include "fuzz_request.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_request(data, size, ngx_http_idv_req_parse_form, 0);
}
