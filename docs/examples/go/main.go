// Command idv-example runs eKYC through ngx_http_idv_module: Initialize, a
// retry, CheckResult.
//
// Go 1.19 or later, standard library only.  Run:  go run .
//
// The gateway (nginx with the module) holds the AccessKey and signs every
// call; this program sends the API's own parameters as plain JSON and gets
// the API's JSON answer back, plus a "Gateway" object the gateway adds.  No
// Alibaba SDK, no signature, no secret here.  See docs/backend-api.md.
//
// Environment:
//
//	IDV_GATEWAY          the gateway (default http://127.0.0.1:8080)
//	IDV_MERCHANT_BIZ_ID  your id of this verification (default: a new one)
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Answer is the API's JSON envelope, which every answer has, error or not.
// Result has the members of the actions used here; the JSON decoder skips
// the others.
type Answer struct {
	RequestID string `json:"RequestId"`
	Code      string `json:"Code"`
	Message   string `json:"Message"`
	Result    struct {
		TransactionID  string `json:"TransactionId"`  // Initialize
		TransactionURL string `json:"TransactionUrl"` // Initialize
		Passed         string `json:"Passed"`         // CheckResult
		SubCode        string `json:"SubCode"`        // CheckResult
	} `json:"Result"`
	Gateway struct {
		Action   string `json:"action"`
		Cached   bool   `json:"cached"`
		Attempts int    `json:"attempts"`
	} `json:"Gateway"`
}

var (
	gateway = strings.TrimSuffix(env("IDV_GATEWAY", "http://127.0.0.1:8080"), "/")
	client  = &http.Client{Timeout: 30 * time.Second}
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// call POSTs params as JSON to the gateway.  HTTP 200 always means Code
// "Success"; anything else is an error with the envelope's Code and
// Message.  429 (throttled by the API or by the gateway's limits) and 409
// with Retry-After (Gateway.IdempotencyInProgress: the same Initialize is
// still running): nothing was done; wait Retry-After seconds and send it
// again.
func call(path string, params map[string]string) (*Answer, error) {
	body, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		resp, err := client.Post(gateway+path, "application/json",
			bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("cannot reach %s: %w", gateway, err)
		}
		var a Answer
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()

		retryAfter := resp.Header.Get("Retry-After")
		switch {
		case resp.StatusCode/100 == 2 && err == nil:
			return &a, nil
		case resp.StatusCode/100 == 2:
			return nil, fmt.Errorf("HTTP %d, not JSON: %w", resp.StatusCode, err)
		case (resp.StatusCode == 429 || retryAfter != "") && attempt < 3:
			wait, _ := strconv.Atoi(retryAfter)
			if wait < 1 {
				wait = 1
			}
			fmt.Fprintf(os.Stderr, "%d %s: retrying in %d s\n",
				resp.StatusCode, a.Code, wait)
			time.Sleep(time.Duration(wait) * time.Second)
			continue
		}
		return nil, fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, a.Code,
			a.Message)
	}
}

func run() error {
	// Letters and digits, at most 32: unique per verification, yours.
	bizID := os.Getenv("IDV_MERCHANT_BIZ_ID")
	if bizID == "" {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		bizID = "go" + hex.EncodeToString(b)
	}

	// Keys are the API's parameter names, values are strings.  The
	// location /idv/ekyc/initialize adds ProductCode=eKYC; the gateway
	// adds the signature, AccessKeyId, timestamp and nonce.
	init := map[string]string{
		"MerchantBizId":  bizID,
		"MerchantUserId": "user-0001",
		"DocType":        "01000000", // passport
		// the string the client SDK's getMetaInfo() returned, unchanged
		"MetaInfo": `{"deviceType":"h5"}`,
	}

	first, err := call("/idv/ekyc/initialize", init)
	if err != nil {
		return err
	}
	tx := first.Result.TransactionID
	fmt.Println("TransactionId:", tx)
	fmt.Println("TransactionUrl:", first.Result.TransactionURL)

	// Lost the answer (timeout, restart)?  Send the same Initialize with
	// the same MerchantBizId.  With idv_cache the gateway answers from its
	// cache: same TransactionId, no second (billable) call.  Without it
	// this is a second call and a new transaction.
	again, err := call("/idv/ekyc/initialize", init)
	if err != nil {
		return err
	}
	how := "false (a second call)"
	if again.Gateway.Cached {
		how = "true (from the cache)"
	}
	fmt.Printf("Retry: TransactionId %s, Gateway.cached %s\n",
		again.Result.TransactionID, how)

	// CheckResult is a read: free, and retried by the gateway itself.
	// Use the TransactionId you stored, never one from the client.
	result, err := call("/idv/result", map[string]string{
		"MerchantBizId": bizID, "TransactionId": tx})
	if err != nil {
		return err
	}

	// 200 means the call worked, not that the person passed.
	passed := result.Result.Passed
	if passed == "" {
		passed = "(pending)"
	}
	fmt.Printf("Passed: %s, SubCode: %s\n", passed, result.Result.SubCode)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
