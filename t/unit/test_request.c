
/*
 * The request model against the documented rules (issue 16): a body is
 * parsed (JSON or form) and validated against its operation's row as
 * the handler does it.  Each rule refuses with 400, the API's own code
 * and a Message that names the parameter and the rule, never the value;
 * a valid example of each passes.  Sources: shared/seeds/000-004 and
 * shared/idv-api/API.md, cited per case.
 *
 *   test_request
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_idv_request.h"
#include "tap.h"
#include "test_pool.h"


#define TEST_JSON  1
#define TEST_FORM  0

#define TEST_OCR_INIT                                                       \
    "\"MerchantUserId\":\"u1\",\"DocType\":\"01000000\",\"MetaInfo\":\"{}\""
#define TEST_EKYC                                                           \
    "\"MerchantBizId\":\"min0001\",\"MerchantUserId\":\"u1\","            \
    "\"FacePictureUrl\":\"https://cdn.example/f.jpg\","                    \
    "\"IdOcrPictureUrl\":\"https://cdn.example/i.jpg\""


static int test_run(const char *action, const char *product,
    const u_char *body, size_t len, int json, ngx_http_idv_req_t *rq,
    test_pool_t *pool);
static void test_refused(const char *action, const char *product,
    const char *body, int json, const char *code, const char *msg,
    const char *value, const char *name);
static void test_accepted(const char *action, const char *product,
    const char *body, int json, const char *name);
static u_char *test_jpeg(size_t bytes, unsigned w, unsigned h);
static void test_image_text(size_t bytes, int ok, const char *name);
static void test_image_alphabet(void);

static void test_merchant_biz_id(void);
static void test_doc_type(void);
static void test_scene_code(void);
static void test_param_type(void);
static void test_callback_url(void);
static void test_ocr_user_id(void);
static void test_enums(void);
static void test_base64_text(void);
static void test_utf8(void);
static void test_typed_text(void);
static void test_allow_param(void);


/* idv_allow_param's parameters for test_run(), as the handler passes them */
static const ngx_http_idv_op_param_t  *test_extra;
static size_t                          test_nextra;


int
main(void)
{
    test_merchant_biz_id();
    test_doc_type();
    test_scene_code();
    test_param_type();
    test_callback_url();
    test_ocr_user_id();
    test_enums();
    test_base64_text();
    test_utf8();
    test_typed_text();
    test_allow_param();

    return tap_done();
}


/*
 * seeds 000, 001, 002 (Initialize) and 004 (EkycVerify): "letters and
 * digits", "32 characters"
 */

static void
test_merchant_biz_id(void)
{
    char  body[256];

    snprintf(body, sizeof(body), "{\"MerchantBizId\":\"%s\"," TEST_OCR_INIT
             "}", "abcdefghijklmnopqrstuvwxyz0123456");
    test_refused("Initialize", "ID_OCR", body, TEST_JSON, "InvalidParameter",
                 "Parameter MerchantBizId must be at most 32 letters and "
                 "digits", "abcdefghijklmnopqrstuvwxyz0123456",
                 "Initialize: a MerchantBizId of 33 characters");

    snprintf(body, sizeof(body), "{\"MerchantBizId\":\"%s\"," TEST_OCR_INIT
             "}", "abcdefghijklmnopqrstuvwxyz012345");
    test_accepted("Initialize", "ID_OCR", body, TEST_JSON,
                  "Initialize: a MerchantBizId of 32 letters and digits");

    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"biz-01_x.y\"," TEST_OCR_INIT "}",
                 TEST_JSON, "InvalidParameter",
                 "Parameter MerchantBizId must be at most 32 letters",
                 "biz-01_x.y", "Initialize: a MerchantBizId with - _ .");

    test_refused("Initialize", "ID_OCR",
                 "MerchantBizId=biz%20001&MerchantUserId=u1"
                 "&DocType=01000000&MetaInfo=%7B%7D",
                 TEST_FORM, "InvalidParameter", "MerchantBizId", "biz 001",
                 "Initialize, a form: a MerchantBizId with a space");

    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"caf\xc3\xa9" "01\"," TEST_OCR_INIT
                 "}", TEST_JSON, "InvalidParameter", "MerchantBizId",
                 "caf\xc3\xa9", "Initialize: a MerchantBizId with an "
                 "accented letter (letters are A-Z, a-z)");

    test_refused("EkycVerify", "eKYC_MIN",
                 "{\"MerchantBizId\":\"order_1\",\"MerchantUserId\":\"u1\","
                 "\"DocType\":\"00000001\","
                 "\"FacePictureUrl\":\"https://cdn.example/f.jpg\","
                 "\"IdOcrPictureUrl\":\"https://cdn.example/i.jpg\"}",
                 TEST_JSON, "InvalidParameter",
                 "Parameter MerchantBizId must be at most 32 letters and "
                 "digits", "order_1",
                 "EkycVerify: a MerchantBizId with an underscore");

    /* the id check before it still names its own limit */

    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"a\\n[alert] forged\"," TEST_OCR_INIT
                 "}", TEST_JSON, "InvalidParameter",
                 "Parameter MerchantBizId must be 1 to 64 visible ASCII",
                 "forged", "Initialize: a MerchantBizId that would forge "
                 "a log line: the id check");

    /* CheckResult names the id given at Initialize: no rule of its own */

    test_accepted("CheckResult", NULL,
                  "{\"MerchantBizId\":\"order-1\",\"TransactionId\":\"t1\"}",
                  TEST_JSON, "CheckResult: MerchantBizId is not checked "
                  "against the Initialize rule");
}


/*
 * seeds 000-002, 004: "an 8-digit value"; the certificate tables of 001,
 * 002 and 004 also list 000000011 and 000000012 (9 digits)
 */

static void
test_doc_type(void)
{
    size_t  i;
    char    body[256];

    static const char  *bad[] = {
        "0156", "ABCDEFGH", "0100000", "0100000000", "0100 000",
        "0100000\xef\xbc\x90", "+1000000", "0x100000", NULL
    };

    static const char  *good[] = {
        "01000000", "00000001", "01560000", "000000011", "000000012", NULL
    };

    for (i = 0; bad[i] != NULL; i++) {
        snprintf(body, sizeof(body), "{\"MerchantBizId\":\"d1\","
                 "\"MerchantUserId\":\"u1\",\"MetaInfo\":\"{}\","
                 "\"DocType\":\"%s\"}", bad[i]);
        test_refused("Initialize", "ID_OCR", body, TEST_JSON,
                     "InvalidParameter",
                     "Parameter DocType must be 8 to 9 digits", bad[i],
                     "Initialize: DocType of a wrong form");

        snprintf(body, sizeof(body), "{" TEST_EKYC ",\"DocType\":\"%s\"}",
                 bad[i]);
        test_refused("EkycVerify", "eKYC_MIN", body, TEST_JSON,
                     "InvalidParameter",
                     "Parameter DocType must be 8 to 9 digits", bad[i],
                     "EkycVerify: DocType of a wrong form");
    }

    for (i = 0; good[i] != NULL; i++) {
        snprintf(body, sizeof(body), "{\"MerchantBizId\":\"d1\","
                 "\"MerchantUserId\":\"u1\",\"MetaInfo\":\"{}\","
                 "\"DocType\":\"%s\"}", good[i]);
        test_accepted("Initialize", "ID_OCR", body, TEST_JSON,
                      "Initialize: a listed DocType");

        snprintf(body, sizeof(body), "{" TEST_EKYC ",\"DocType\":\"%s\"}",
                 good[i]);
        test_accepted("EkycVerify", "eKYC_MIN", body, TEST_JSON,
                      "EkycVerify: a listed DocType");
    }
}


/*
 * seeds 001 ("letters, digits, or underscores with a length of 10
 * characters"), 002 ("letters, digits, and underscores (_), up to 10
 * characters long")
 */

static void
test_scene_code(void)
{
    test_refused("Initialize", "eKYC",
                 "{\"MerchantBizId\":\"s1\"," TEST_OCR_INIT
                 ",\"SceneCode\":\"scene_0123x\"}", TEST_JSON,
                 "InvalidParameter", "Parameter SceneCode must be at most "
                 "10 letters, digits and underscores", "scene_0123x",
                 "Initialize: a SceneCode of 11 characters");

    test_refused("Initialize", "eKYC",
                 "{\"MerchantBizId\":\"s1\"," TEST_OCR_INIT
                 ",\"SceneCode\":\"scene-1\"}", TEST_JSON,
                 "InvalidParameter", "Parameter SceneCode", "scene-1",
                 "Initialize: a SceneCode with a hyphen");

    test_accepted("Initialize", "eKYC",
                  "{\"MerchantBizId\":\"s1\"," TEST_OCR_INIT
                  ",\"SceneCode\":\"scene_0123\"}", TEST_JSON,
                  "Initialize: a SceneCode of 10 letters, digits and _");

    test_accepted("Initialize", "eKYC",
                  "{\"MerchantBizId\":\"s1\"," TEST_OCR_INIT
                  ",\"SceneCode\":\"1234567890\"}", TEST_JSON,
                  "Initialize: the seeds' example SceneCode");
}


/* seed 003: "normal: The original value in plaintext"; no MD5 */

static void
test_param_type(void)
{
    test_refused("Id2MetaVerifyIntl", "ID_2META",
                 "{\"ParamType\":\"md5\","
                 "\"IdentifyNum\":\"110101199001011234\","
                 "\"UserName\":\"Zhang\"}", TEST_JSON, "InvalidParameter",
                 "Parameter ParamType must be normal", "md5",
                 "Id2MetaVerifyIntl: ParamType md5");

    test_refused("Id2MetaVerifyIntl", "ID_2META",
                 "ParamType=Normal&IdentifyNum=110101199001011234"
                 "&UserName=Zhang", TEST_FORM, "InvalidParameter",
                 "Parameter ParamType", "Normal",
                 "Id2MetaVerifyIntl: the value is case-sensitive");

    test_accepted("Id2MetaVerifyIntl", "ID_2META",
                  "{\"ParamType\":\"normal\","
                  "\"IdentifyNum\":\"110101199001011234\","
                  "\"UserName\":\"Zhang\"}", TEST_JSON,
                  "Id2MetaVerifyIntl: ParamType normal");
}


/* seeds 000-002: "The callback URL must start with https" */

static void
test_callback_url(void)
{
    test_refused("Initialize", "eKYC",
                 "{\"MerchantBizId\":\"c1\"," TEST_OCR_INIT
                 ",\"CallbackUrl\":\"http://merchant.example/cb\"}",
                 TEST_JSON, "InvalidParameter",
                 "Parameter CallbackUrl must be an https URL",
                 "merchant.example", "Initialize: an http:// CallbackUrl");

    test_refused("Initialize", "eKYC",
                 "{\"MerchantBizId\":\"c1\"," TEST_OCR_INIT
                 ",\"CallbackUrl\":\"https:///cb\"}",
                 TEST_JSON, "InvalidParameter",
                 "Parameter CallbackUrl must be an https URL", "///cb",
                 "Initialize: an https CallbackUrl without a host");

    test_accepted("Initialize", "eKYC",
                  "{\"MerchantBizId\":\"c1\"," TEST_OCR_INIT
                  ",\"CallbackUrl\":\"https://merchant.example/cb?x=1\"}",
                  TEST_JSON, "Initialize: an https CallbackUrl");

    test_accepted("Initialize", "eKYC",
                  "{\"MerchantBizId\":\"c1\"," TEST_OCR_INIT
                  ",\"CallbackUrl\":\"HTTPS://merchant.example/cb\"}",
                  TEST_JSON, "Initialize: the scheme in any case");

    /* the other URLs keep http(s): seed 004 "an HTTP or HTTPS link" */

    test_accepted("Initialize", "ID_OCR",
                  "{\"MerchantBizId\":\"c1\"," TEST_OCR_INIT
                  ",\"ReturnUrl\":\"http://merchant.example/done\"}",
                  TEST_JSON, "Initialize: an http:// ReturnUrl still "
                  "passes");
}


/* seed 002 (ID_OCR Initialize): MerchantUserId "Required: Yes" */

static void
test_ocr_user_id(void)
{
    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"o1\",\"DocType\":\"01000000\","
                 "\"MetaInfo\":\"{}\"}", TEST_JSON, "MissingParameter",
                 "Missing parameter MerchantUserId", NULL,
                 "Initialize ID_OCR: no MerchantUserId");

    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"o1\",\"DocType\":\"01000000\","
                 "\"MetaInfo\":\"{}\",\"MerchantUserId\":\"\"}", TEST_JSON,
                 "MissingParameter", "Missing parameter MerchantUserId",
                 NULL, "Initialize ID_OCR: an empty MerchantUserId");

    test_accepted("Initialize", "ID_OCR",
                  "{\"MerchantBizId\":\"o1\"," TEST_OCR_INIT "}", TEST_JSON,
                  "Initialize ID_OCR: with MerchantUserId");

    test_accepted("Initialize", "FACE_LIVENESS",
                  "{\"MerchantBizId\":\"o1\",\"MetaInfo\":\"{}\"}",
                  TEST_JSON, "Initialize FACE_LIVENESS: still without");
}


/* the sets API.md gives: 4.1 Initialize, 4.2 EkycVerify, 4.3 CheckResult */

static void
test_enums(void)
{
    size_t  i;
    char    body[512];

    static const struct {
        const char  *action;
        const char  *product;
        const char  *param;
        const char  *bad;
        const char  *good;
        const char  *msg;
    } cases[] = {
        { "Initialize", "eKYC", "Authorize", "Y", "T",
          "Parameter Authorize must be one of T, F" },
        { "Initialize", "eKYC", "IdThreshold", "4", "3",
          "Parameter IdThreshold must be one of 0, 1, 2, 3" },
        { "Initialize", "eKYC", "SecurityLevel", "03", "02",
          "Parameter SecurityLevel must be one of 01, 02" },
        { "Initialize", "IDR_GLOBAL", "ProductFlow", "FACEDOC", "FACE_DOC",
          "Parameter ProductFlow must be one of DOC_FACE, FACE_DOC" },
        { "EkycVerify", "eKYC_MIN", "Authorize", "true", "F",
          "Parameter Authorize must be one of T, F" },
        { "EkycVerify", "eKYC_MIN", "Crop", "Y", "F",
          "Parameter Crop must be one of T, F" },
        { "EkycVerify", "eKYC_MIN", "IdThreshold", "01", "0",
          "Parameter IdThreshold must be one of 0, 1, 2, 3" },
        { "CheckResult", NULL, "IsReturnImage", "y", "Y",
          "Parameter IsReturnImage must be one of Y, N" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 strcmp(cases[i].action, "EkycVerify") == 0
                 ? "{" TEST_EKYC ",\"DocType\":\"00000001\",\"%s\":\"%s\"}"
                 : strcmp(cases[i].action, "CheckResult") == 0
                 ? "{\"MerchantBizId\":\"e1\",\"TransactionId\":\"t1\","
                   "\"%s\":\"%s\"}"
                 : "{\"MerchantBizId\":\"e1\"," TEST_OCR_INIT
                   ",\"%s\":\"%s\"}",
                 cases[i].param, cases[i].bad);
        test_refused(cases[i].action, cases[i].product, body, TEST_JSON,
                     "InvalidParameter", cases[i].msg,
                     strlen(cases[i].bad) > 1 ? cases[i].bad : NULL,
                     cases[i].param);

        snprintf(body, sizeof(body),
                 strcmp(cases[i].action, "EkycVerify") == 0
                 ? "{" TEST_EKYC ",\"DocType\":\"00000001\",\"%s\":\"%s\"}"
                 : strcmp(cases[i].action, "CheckResult") == 0
                 ? "{\"MerchantBizId\":\"e1\",\"TransactionId\":\"t1\","
                   "\"%s\":\"%s\"}"
                 : "{\"MerchantBizId\":\"e1\"," TEST_OCR_INIT
                   ",\"%s\":\"%s\"}",
                 cases[i].param, cases[i].good);
        test_accepted(cases[i].action, cases[i].product, body, TEST_JSON,
                      cases[i].param);
    }

    /* no exact set in the documents: left to the API */

    test_accepted("Initialize", "eKYC",
                  "{\"MerchantBizId\":\"e1\"," TEST_OCR_INIT
                  ",\"IdSpoof\":\"X\",\"Model\":\"NEW_MODEL\","
                  "\"DocScanMode\":\"shoot\",\"Crop\":\"Y\"}", TEST_JSON,
                  "Initialize: IdSpoof, Model, DocScanMode, Crop have no "
                  "documented set here");
}


/*
 * seed 004: "ensure that the original image size does not exceed 0.6 MB
 * to avoid exceeding the 1 MB data transfer limit": the limit holds for
 * the base64 text
 */

static void
test_base64_text(void)
{
    test_image_text(700000, 1, "a 0.7 MB image (base64 933,336 bytes)");
    test_image_text(786432, 1, "an image whose base64 is exactly 1 MB");
    test_image_text(786433, 0, "an image whose base64 is 4 bytes over 1 MB");
    test_image_text(943718, 0, "a 0.9 MB image (base64 1,258,292 bytes)");
    test_image_alphabet();
}


/* well-formed UTF-8 only (RFC 3629), in every string value */

static void
test_utf8(void)
{
    size_t  i;
    char    body[512];

    static const struct {
        const char  *bytes;
        const char  *name;
    } bad[] = {
        { "\xc0\xaf", "an overlong '/' (2 bytes)" },
        { "\xe0\x80\xaf", "an overlong '/' (3 bytes)" },
        { "\xf0\x80\x80\xaf", "an overlong '/' (4 bytes)" },
        { "\xc1\xbf", "an overlong DEL" },
        { "\xed\xa0\x80", "a UTF-16 surrogate" },
        { "\xf4\x90\x80\x80", "a code point above U+10FFFF" },
        { "\xf8\x88\x80\x80\x80", "a 5-byte form" },
        { "\xff", "a 0xFF byte" },
        { "\x80", "a lone continuation byte" },
        { "Zh\xe5\xbc", "a truncated character" },
        { "\xe5\x41\x41", "a lead byte without continuations" },
        { "\xc3\xa9\xa9", "a continuation too many" },
    };

    static const char  *good[] = {
        "\xe5\xbc\xa0\xe4\xb8\x89", "\xc3\xa9 \xe2\x9c\x93",
        "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf", "\xef\xbf\xbf",
        "\xed\x9f\xbf", "\xc2\x80", NULL
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"ParamType\":\"normal\","
                 "\"IdentifyNum\":\"110101199001011234\","
                 "\"UserName\":\"%s\"}", bad[i].bytes);
        test_refused("Id2MetaVerifyIntl", "ID_2META", body, TEST_JSON,
                     "InvalidParameter",
                     "Parameter UserName is not valid UTF-8",
                     "110101199001011234", bad[i].name);
    }

    test_refused("Initialize", "ID_OCR",
                 "MerchantBizId=u1&MerchantUserId=u1&DocType=01000000"
                 "&MetaInfo=%7B%22a%22%3A%22%C0%AF%22%7D", TEST_FORM,
                 "InvalidParameter", "Parameter MetaInfo is not valid UTF-8",
                 NULL, "a form: an overlong form, percent-encoded");

    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"u1\"," TEST_OCR_INIT
                 ",\"DocPageConfig\":[\"\xed\xb0\x80\"]}", TEST_JSON,
                 "InvalidParameter",
                 "Parameter DocPageConfig is not valid UTF-8", NULL,
                 "an array with a surrogate inside");

    for (i = 0; good[i] != NULL; i++) {
        snprintf(body, sizeof(body), "{\"ParamType\":\"normal\","
                 "\"IdentifyNum\":\"110101199001011234\","
                 "\"UserName\":\"%s\"}", good[i]);
        test_accepted("Id2MetaVerifyIntl", "ID_2META", body, TEST_JSON,
                      "well-formed UTF-8");
    }

    test_accepted("Id2MetaVerifyIntl", "ID_2META",
                  "{\"ParamType\":\"normal\","
                  "\"IdentifyNum\":\"110101199001011234\","
                  "\"UserName\":\"\\ud83d\\ude00 \\u5f20\"}", TEST_JSON,
                  "JSON escapes become well-formed UTF-8");
}


/* parse, the location's ProductCode, validate: as the handler does */

static int
test_run(const char *action, const char *product, const u_char *body,
    size_t len, int json, ngx_http_idv_req_t *rq, test_pool_t *pool)
{
    u_char  *copy;

    memset(rq, 0, sizeof(ngx_http_idv_req_t));

    rq->op = ngx_http_idv_op_find((const u_char *) action, strlen(action));
    rq->alloc = test_alloc;
    rq->alloc_data = pool;
    rq->extra = test_extra;
    rq->nextra = test_nextra;

    if (rq->op == NULL) {
        return -2;
    }

    /* the parsers work in place, on exactly len bytes */

    copy = test_alloc(pool, len ? len : 1);
    if (copy == NULL) {
        return -2;
    }

    memcpy(copy, body, len);

    if ((json ? ngx_http_idv_req_parse_json(rq, copy, len)
              : ngx_http_idv_req_parse_form(rq, copy, len))
        != 0)
    {
        return -1;
    }

    if (product) {
        if (ngx_http_idv_req_set(rq, "ProductCode", (u_char *) product,
                                 strlen(product))
            != 0)
        {
            return -1;
        }

        rq->product = test_str(product);
    }

    return ngx_http_idv_req_validate(rq);
}


static void
test_refused(const char *action, const char *product, const char *body,
    int json, const char *code, const char *msg, const char *value,
    const char *name)
{
    int                  rc;
    test_pool_t          pool;
    ngx_http_idv_req_t   rq;

    memset(&pool, 0, sizeof(test_pool_t));

    rc = test_run(action, product, (const u_char *) body, strlen(body), json,
                  &rq, &pool);

    tap_ok(rc == -1 && rq.status == 400 && rq.code != NULL
           && strcmp(rq.code, code) == 0,
           "%s: refused, 400 %s", name, code);

    tap_ok(rc == -1 && strstr(rq.message, msg) != NULL,
           "%s: the Message says \"%s\"", name, msg);

    if (rc == -1 && strstr(rq.message, msg) == NULL) {
        printf("#   Message: %s\n", rq.message);
    }

    if (value != NULL) {
        tap_ok(strstr(rq.message, value) == NULL,
               "%s: the value is not in the Message", name);
    }

    ngx_http_idv_req_free(&rq);
    test_pool_free(&pool);
}


static void
test_accepted(const char *action, const char *product, const char *body,
    int json, const char *name)
{
    int                  rc;
    test_pool_t          pool;
    ngx_http_idv_req_t   rq;

    memset(&pool, 0, sizeof(test_pool_t));

    rc = test_run(action, product, (const u_char *) body, strlen(body), json,
                  &rq, &pool);

    tap_ok(rc == 0, "%s: accepted", name);

    if (rc != 0) {
        printf("#   %d %s: %s\n", rq.status, rq.code ? rq.code : "-",
               rq.message);
    }

    ngx_http_idv_req_free(&rq);
    test_pool_free(&pool);
}


/*
 * A JPEG of exactly bytes bytes and w x h pixels: SOI, APP1 padding
 * segments, SOF0, EOI
 */

static u_char *
test_jpeg(size_t bytes, unsigned w, unsigned h)
{
    size_t   n, seg, pad;
    u_char  *img, *p;

    static const u_char  sof[] = {
        0xff, 0xc0, 0x00, 0x11, 0x08, 0, 0, 0, 0,
        0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01
    };

    img = malloc(bytes);
    if (img == NULL || bytes < 2 + sizeof(sof) + 2 + 8) {
        free(img);
        return NULL;
    }

    p = img;
    *p++ = 0xff;
    *p++ = 0xd8;

    pad = bytes - 2 - sizeof(sof) - 2;

    while (pad) {
        /* a segment of 4 + seg bytes; never leave fewer than 4 */
        seg = pad - 4 > 65533 ? 65533 : pad - 4;

        if (pad - (seg + 4) != 0 && pad - (seg + 4) < 4) {
            seg -= 4;
        }

        *p++ = 0xff;
        *p++ = 0xe1;
        *p++ = (u_char) ((seg + 2) >> 8);
        *p++ = (u_char) (seg + 2);
        memset(p, 'E', seg);
        p += seg;
        pad -= seg + 4;
    }

    memcpy(p, sof, sizeof(sof));
    p[5] = (u_char) (h >> 8);
    p[6] = (u_char) h;
    p[7] = (u_char) (w >> 8);
    p[8] = (u_char) w;
    p += sizeof(sof);

    *p++ = 0xff;
    *p++ = 0xd9;

    n = p - img;

    if (n != bytes) {
        free(img);
        return NULL;
    }

    return img;
}


/* an image of bytes bytes as base64, checked alone and in EkycVerify */

static void
test_image_text(size_t bytes, int ok, const char *name)
{
    int                  rc;
    char                *body;
    u_char              *img, *b64;
    size_t               len, n;
    test_pool_t          pool;
    ngx_http_idv_req_t   rq;

    img = test_jpeg(bytes, 720, 1280);
    b64 = malloc((bytes + 2) / 3 * 4 + 1);

    if (img == NULL || b64 == NULL) {
        tap_ok(0, "%s: built", name);
        free(img);
        free(b64);
        return;
    }

    len = ngx_http_idv_base64_encode(b64, img, bytes);

    memset(&rq, 0, sizeof(ngx_http_idv_req_t));
    rc = ngx_http_idv_image_check(&rq, "FacePictureBase64", b64, len);

    if (ok) {
        tap_ok(rc == 0, "%s: accepted", name);

    } else {
        tap_ok(rc == -1 && rq.status == 400
               && strcmp(rq.code, "ToolargeImage") == 0
               && strstr(rq.message, "Image FacePictureBase64 is larger "
                                     "than 1 MB as base64 text") != NULL,
               "%s: 400 ToolargeImage, the Message names the image and "
               "the limit", name);
    }

    /* the same in an EkycVerify body */

    n = len + 512;
    body = malloc(n);

    if (body == NULL) {
        tap_ok(0, "%s: built", name);
        free(img);
        free(b64);
        return;
    }

    n = snprintf(body, n, "{\"MerchantBizId\":\"img01\","
                 "\"MerchantUserId\":\"u1\",\"DocType\":\"00000001\","
                 "\"IdOcrPictureUrl\":\"https://cdn.example/i.jpg\","
                 "\"FacePictureBase64\":\"%.*s\"}", (int) len, b64);

    memset(&pool, 0, sizeof(test_pool_t));
    rc = test_run("EkycVerify", "eKYC_MIN", (u_char *) body, n, TEST_JSON,
                  &rq, &pool);

    tap_ok(ok ? rc == 0
              : rc == -1 && strcmp(rq.code, "ToolargeImage") == 0,
           "%s: EkycVerify %s", name, ok ? "accepts it" : "refuses it");

    ngx_http_idv_req_free(&rq);
    test_pool_free(&pool);

    free(body);
    free(img);
    free(b64);
}


/*
 * Every byte value at places in the first and second half of a 32-byte
 * block, at a block's end and in the bytes after the last block: accepted
 * exactly when it is in the base64 alphabet.
 */

static void
test_image_alphabet(void)
{
    int                  c, rc, in, bad;
    u_char              *img, *b64, saved;
    size_t               len, i;
    ngx_http_idv_req_t   rq;

    static const size_t  at[] = { 200, 215, 216, 231, 1000, 3967, 3980,
                                  3985 };

    /*
     * 2990 bytes: 3988 base64 bytes, one '=': the last block ends at 3968
     * (3986 is not tried: a '=' there is padding)
     */

    img = test_jpeg(2990, 720, 1280);
    b64 = malloc(3988 + 1);

    if (img == NULL || b64 == NULL) {
        tap_ok(0, "image alphabet: built");
        free(img);
        free(b64);
        return;
    }

    len = ngx_http_idv_base64_encode(b64, img, 2990);
    bad = 0;

    for (i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        saved = b64[at[i]];

        for (c = 0; c < 256; c++) {
            b64[at[i]] = (u_char) c;
            in = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                 || (c >= '0' && c <= '9') || c == '+' || c == '/';

            memset(&rq, 0, sizeof(ngx_http_idv_req_t));
            rc = ngx_http_idv_image_check(&rq, "FacePictureBase64", b64, len);

            if (in ? rc != 0
                   : rc != -1 || strstr(rq.message, "not valid base64")
                                 == NULL)
            {
                printf("#   byte 0x%02x at %zu: %s\n", c, at[i],
                       in ? "refused" : "accepted");
                bad++;
            }
        }

        b64[at[i]] = saved;
    }

    tap_ok(len == 3988 && bad == 0, "image alphabet: each of the 256 byte "
           "values at 8 places is accepted exactly when it is base64");

    free(img);
    free(b64);
}


/*
 * An array (or object) parameter is sent as the backend's text, checked
 * but not re-serialised: cJSON would print 12345678901234567890 as
 * 1.2345678901234567e+19 and 1e400 as null.
 */

static void
test_typed_text(void)
{
    int                    rc;
    test_pool_t            pool;
    const char            *want;
    ngx_http_idv_req_t     rq;
    ngx_http_idv_param_t  *p;

    static const char  body[] =
        "{\"MerchantBizId\":\"u1\"," TEST_OCR_INIT
        ",\"DocPageConfig\":[1e400, 12345678901234567890,\"back\"] }";

    want = "[1e400, 12345678901234567890,\"back\"]";

    memset(&pool, 0, sizeof(test_pool_t));

    rc = test_run("Initialize", "ID_OCR", (const u_char *) body,
                  sizeof(body) - 1, TEST_JSON, &rq, &pool);

    tap_ok(rc == 0, "an array with a huge and a long number: accepted");

    p = (rc == 0) ? ngx_http_idv_req_get(&rq, "DocPageConfig") : NULL;

    tap_ok(p != NULL && p->value.len == strlen(want)
           && memcmp(p->value.data, want, p->value.len) == 0,
           "an array parameter: the backend's text, byte for byte");

    ngx_http_idv_req_free(&rq);
    test_pool_free(&pool);

    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"u1\"," TEST_OCR_INIT
                 ",\"DocPageConfig\":[\"a\x01" "b\"]}", TEST_JSON,
                 "InvalidParameter", "not valid JSON", NULL,
                 "an array with a control byte in a string");

    test_refused("Initialize", "ID_OCR",
                 "{\"MerchantBizId\":\"u1\"," TEST_OCR_INIT
                 ",\"DocPageConfig\":[1,\x01 2]}", TEST_JSON,
                 "InvalidParameter", "not valid JSON", NULL,
                 "an array with a control byte between values");

    test_accepted("Initialize", "ID_OCR",
                  "{\"MerchantBizId\":\"u1\"," TEST_OCR_INIT
                  ",\"DocPageConfig\":[\r\n\t\"a\\tb\" ]}", TEST_JSON,
                  "an array with white space and an escaped tab");
}


/*
 * idv_allow_param: a name of no row is accepted with the placement it
 * is given and the checks every string gets; without it, refused
 */

static void
test_allow_param(void)
{
    int                   rc;
    test_pool_t           pool;
    ngx_http_idv_req_t    rq;
    ngx_http_idv_param_t  *v;

    static const ngx_http_idv_op_param_t  extra[] = {
        { ngx_http_idv_string("FutureBody"), NGX_HTTP_IDV_T_STRING,
          NGX_HTTP_IDV_P_BODY|NGX_HTTP_IDV_P_PII, NULL, NULL, NULL },
        { ngx_http_idv_string("FutureQuery"), NGX_HTTP_IDV_T_STRING,
          NGX_HTTP_IDV_P_PII, NULL, NULL, NULL },
        /* a name of the row: the row's placement and checks hold */
        { ngx_http_idv_string("FacePictureBase64"), NGX_HTTP_IDV_T_STRING,
          NGX_HTTP_IDV_P_PII, NULL, NULL, NULL },
    };

    test_refused("CheckResult", NULL,
                 "{\"MerchantBizId\":\"b1\",\"TransactionId\":\"t1\","
                 "\"FutureBody\":\"x\"}", TEST_JSON, "InvalidParameter",
                 "FutureBody is not accepted by this action", NULL,
                 "allow_param: not allowed");

    test_extra = extra;
    test_nextra = sizeof(extra) / sizeof(extra[0]);

    memset(&pool, 0, sizeof(test_pool_t));

    rc = test_run("CheckResult", NULL, (const u_char *)
                  "{\"MerchantBizId\":\"b1\",\"TransactionId\":\"t1\","
                  "\"FutureBody\":\"\\u00fc\",\"FutureQuery\":\"q\"}",
                  sizeof("{\"MerchantBizId\":\"b1\",\"TransactionId\":"
                         "\"t1\",\"FutureBody\":\"\\u00fc\","
                         "\"FutureQuery\":\"q\"}") - 1,
                  TEST_JSON, &rq, &pool);
    tap_ok(rc == 0, "allow_param: accepted");

    v = ngx_http_idv_req_get(&rq, "FutureBody");
    tap_ok(v != NULL && v->body && v->pii && v->value.len == 2
           && memcmp(v->value.data, "\xc3\xbc", 2) == 0,
           "allow_param: FutureBody in the body, PII, unescaped");

    v = ngx_http_idv_req_get(&rq, "FutureQuery");
    tap_ok(v != NULL && !v->body && v->pii,
           "allow_param: FutureQuery in the query, PII");

    ngx_http_idv_req_free(&rq);
    test_pool_free(&pool);

    test_refused("CheckResult", NULL,
                 "MerchantBizId=b1&TransactionId=t1&FutureBody=%C3%28",
                 TEST_FORM, "InvalidParameter",
                 "FutureBody is not valid UTF-8", NULL,
                 "allow_param: invalid UTF-8");

    test_refused("CheckResult", NULL,
                 "MerchantBizId=b1&TransactionId=t1&FutureQuery=a"
                 "&FutureQuery=b", TEST_FORM, "InvalidParameter",
                 "FutureQuery is given more than once", NULL,
                 "allow_param: given twice");

    test_refused("CheckResult", NULL,
                 "{\"MerchantBizId\":\"b1\",\"TransactionId\":\"t1\","
                 "\"FutureQuery\":1}", TEST_JSON, "InvalidParameter",
                 "FutureQuery must be a string", NULL,
                 "allow_param: a string, not a number");

    /*
     * FacePictureBase64 allowed in the query: FaceLiveness's row has it,
     * and its image check and body placement hold
     */

    test_refused("FaceLiveness", "FACE_LIVENESS_MIN",
                 "MerchantBizId=b1&FacePictureBase64=bm90IGFuIGltYWdl",
                 TEST_FORM, "InvalidParameter",
                 "FacePictureBase64 is not a JPEG or PNG image", NULL,
                 "allow_param: a row's name keeps the row's checks");

    memset(&pool, 0, sizeof(test_pool_t));

    rc = test_run("FaceLiveness", "FACE_LIVENESS_MIN", (const u_char *)
                  "MerchantBizId=b1&FacePictureUrl=https%3A%2F%2Fx%2Fy.jpg",
                  sizeof("MerchantBizId=b1&FacePictureUrl=https%3A%2F%2Fx"
                         "%2Fy.jpg") - 1, TEST_FORM, &rq, &pool);
    tap_ok(rc == 0, "allow_param: the row's alternative still counts");

    ngx_http_idv_req_free(&rq);
    test_pool_free(&pool);

    test_extra = NULL;
    test_nextra = 0;
}
