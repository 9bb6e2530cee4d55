// A small blocking HTTP/1.1 client: one keep-alive connection to one
// host:port, reconnected on demand. Used by the etcd client and by hc.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "common/fs.h"
#include "net/http.h"
#include "net/socket.h"

namespace hc::net {

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds request_timeout{10000};
  HttpLimits limits;
};

class HttpClient {
 public:
  explicit HttpClient(HostPort to, HttpClientOptions opts = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request (Host and Content-Length added) and reads the whole
  // response. Reuses the connection when the server keeps it alive; on a
  // stale kept-alive connection (write fails or EOF before any byte) it
  // reconnects and retries once. Unavailable on connect failure/timeout.
  // `timeout` 0 = options' request_timeout.
  Result<HttpResponse> Do(const HttpRequest& req, std::chrono::milliseconds timeout = {});
  Result<HttpResponse> Do(std::string_view method, std::string_view target, std::string body = {},
                          std::string_view content_type = "application/json",
                          std::chrono::milliseconds timeout = {});

  // Sends a request and streams the (dechunked) response body to on_data as
  // it arrives, without a request deadline; stops when on_data returns false,
  // the body ends, the peer closes, or *cancel becomes true (checked at least
  // every 200 ms). Returns the response head via *head if given. A non-2xx
  // status is returned as an error with the body text. Always uses a fresh
  // connection that is closed afterwards.
  Status Stream(const HttpRequest& req, const std::function<bool(std::string_view)>& on_data,
                const std::atomic<bool>* cancel, HttpResponse* head = nullptr);

  const HostPort& peer() const { return to_; }
  void Close();

 private:
  HostPort to_;
  HttpClientOptions opts_;
  UniqueFd fd_;
  std::string buf_;  // bytes read past the previous response
};

}  // namespace hc::net
