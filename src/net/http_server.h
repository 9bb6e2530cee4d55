// A small threaded HTTP/1.1 server for the REST API: an accept thread and a
// thread per connection (bounded), keep-alive, limits against slow or
// oversized clients. Not the proxy's hot path.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "common/fs.h"
#include "net/http.h"
#include "net/socket.h"

namespace hc::net {

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  size_t max_connections = 256;                     // beyond: 503 and close
  std::chrono::milliseconds header_timeout{10000};  // whole head must arrive
  std::chrono::milliseconds body_timeout{30000};
  std::chrono::milliseconds idle_timeout{60000};  // between keep-alive requests
  HttpLimits limits;  // 431 on big heads, 413 on big bodies, 400 malformed
};

class HttpServer {
 public:
  HttpServer(HttpHandler handler, HttpServerOptions opts = {});
  ~HttpServer();  // Stop()
  // Binds and starts serving in background threads.
  Status Start(const HostPort& at);
  uint16_t port() const;
  // Stops accepting, closes idle connections, waits for handlers to return.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hc::net
