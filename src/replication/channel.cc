#include "replication/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <vector>

#include "common/log.h"
#include "common/names.h"
#include "storage/stream_format.h"

namespace hc::replication {
namespace {

// Data frames carry up to 1 MiB of stream: large enough that the 37 bytes
// of framing and one SHA-256 pass per frame are noise, small enough that a
// damaged frame is found before much of the stream has gone to the store.
constexpr size_t kDataFrameBytes = 1u << 20;

// One direction's sequence numbers and parser, over a borrowed socket.
class FramedConn {
 public:
  FramedConn(int fd, int timeout_ms) : fd_(fd), timeout_(timeout_ms) {}

  Status Send(FrameType type, std::string_view payload) {
    return SendEncoded(Encode(type, payload));
  }
  std::string Encode(FrameType type, std::string_view payload) {
    return EncodeFrame(send_seq_++, type, payload);
  }
  Status SendEncoded(std::string_view frame) { return net::WriteAll(fd_, frame, Deadline()); }

  Result<Frame> Read() {
    for (;;) {
      HC_ASSIGN_OR_RETURN(std::optional<Frame> f, parser_.Next());
      if (f) return std::move(*f);
      char buf[64 * 1024];
      HC_ASSIGN_OR_RETURN(size_t n, net::ReadSome(fd_, buf, sizeof buf, Deadline()));
      if (n == 0) {
        return Unavailable(parser_.buffered() == 0 ? "replication peer closed the connection"
                                                   : "replication peer closed the connection "
                                                     "in the middle of a frame");
      }
      parser_.Append({buf, n});
    }
  }

  // True if the peer has sent something (or closed) that we have not read.
  bool PeerSpoke() const {
    if (parser_.buffered() > 0) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  int fd() const { return fd_; }
  net::Deadline Deadline() const { return net::DeadlineIn(std::chrono::milliseconds(timeout_)); }

 private:
  int fd_;
  int timeout_;
  uint64_t send_seq_ = 0;
  FrameParser parser_;
};

// The storage stream carried by D frames, ending at the F frame (whose
// total must match).
class FrameSource : public ByteSource {
 public:
  explicit FrameSource(FramedConn& c) : c_(c) {}

  Result<size_t> Read(std::span<uint8_t> data) override {
    while (pos_ == cur_.size()) {
      if (finished_) return size_t{0};
      auto got = c_.Read();
      if (!got.ok()) {
        transport_failed_ = got.status().code() == Code::kUnavailable;
        return got.status();
      }
      Frame f = std::move(*got);
      if (f.type == kFrameFinish) {
        HC_ASSIGN_OR_RETURN(TransferFinish fin, DecodeFinish(f.payload));
        if (fin.total_bytes != total_) {
          return Corrupt("replication stream ended after " + std::to_string(total_) +
                         " bytes but the sender says it sent " + std::to_string(fin.total_bytes));
        }
        finished_ = true;
        return size_t{0};
      }
      if (f.type != kFrameData) {
        return Corrupt(std::string("replication sender sent frame type '") +
                       static_cast<char>(f.type) + "' inside the stream");
      }
      total_ += f.payload.size();
      cur_ = std::move(f.payload);
      pos_ = 0;
    }
    size_t n = std::min(data.size(), cur_.size() - pos_);
    std::copy_n(cur_.data() + pos_, n, data.data());
    pos_ += n;
    return n;
  }

  bool finished() const { return finished_; }
  uint64_t total() const { return total_; }
  // The connection failed (cut, timeout), as opposed to bad bytes.
  bool transport_failed() const { return transport_failed_; }

 private:
  FramedConn& c_;
  bool transport_failed_ = false;
  std::string cur_;
  size_t pos_ = 0;
  uint64_t total_ = 0;
  bool finished_ = false;
};

// Serves `prefix`, then the rest of `rest`.
class PrefixSource : public ByteSource {
 public:
  PrefixSource(std::string prefix, ByteSource& rest) : prefix_(std::move(prefix)), rest_(rest) {}
  Result<size_t> Read(std::span<uint8_t> data) override {
    if (pos_ < prefix_.size()) {
      size_t n = std::min(data.size(), prefix_.size() - pos_);
      std::copy_n(prefix_.data() + pos_, n, data.data());
      pos_ += n;
      return n;
    }
    return rest_.Read(data);
  }

 private:
  std::string prefix_;
  size_t pos_ = 0;
  ByteSource& rest_;
};

// Copies what it reads from `in` to `spool` (an append-only file; -1 = no
// copy). A failed copy only ends the copying: resume is an optimisation.
class TeeSource : public ByteSource {
 public:
  TeeSource(ByteSource& in, int spool) : in_(in), spool_(spool) {}
  Result<size_t> Read(std::span<uint8_t> data) override {
    HC_ASSIGN_OR_RETURN(size_t n, in_.Read(data));
    if (spool_ >= 0 && n > 0) {
      FdSink out(spool_);
      if (!out.Write(data.first(n)).ok()) spool_ = -1;
    }
    return n;
  }

 private:
  ByteSource& in_;
  int spool_;
};

// The first `limit` bytes of `first` (a spooled prefix), then `second`.
class ConcatSource : public ByteSource {
 public:
  ConcatSource(ByteSource& first, uint64_t limit, ByteSource& second)
      : first_(first), left_(limit), second_(second) {}
  Result<size_t> Read(std::span<uint8_t> data) override {
    if (left_ > 0) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(left_, data.size()));
      HC_ASSIGN_OR_RETURN(size_t n, first_.Read(data.first(want)));
      if (n == 0) return Corrupt("the spooled part of the transfer is shorter than recorded");
      left_ -= n;
      return n;
    }
    return second_.Read(data);
  }

 private:
  ByteSource& first_;
  uint64_t left_;
  ByteSource& second_;
};

// Drops the first `skip` bytes (what the replica already holds).
class SkipSink : public ByteSink {
 public:
  SkipSink(ByteSink& out, uint64_t skip) : out_(out), skip_(skip) {}
  Status Write(std::span<const uint8_t> data) override {
    size_t n = static_cast<size_t>(std::min<uint64_t>(skip_, data.size()));
    skip_ -= n;
    data = data.subspan(n);
    return data.empty() ? Status::Ok() : out_.Write(data);
  }

 private:
  ByteSink& out_;
  uint64_t skip_;
};

// Reads the magic and the header record off `in` (returned in *raw so they
// can be replayed to the store) and decodes them.
Result<storage::StreamHeader> PeekStreamHeader(ByteSource& in, std::string* raw) {
  constexpr size_t kFixed = sizeof(storage::kStreamMagic) + 5;
  raw->resize(kFixed);
  HC_ASSIGN_OR_RETURN(size_t n,
                      ReadFull(in, {reinterpret_cast<uint8_t*>(raw->data()), raw->size()}));
  if (n < kFixed) return Corrupt("replication stream ended inside its header");
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len |= uint32_t{static_cast<uint8_t>((*raw)[9 + i])} << (8 * i);
  if (len > 64 * 1024) return Corrupt("replication stream header record is too large");
  raw->resize(kFixed + len + 8);
  HC_ASSIGN_OR_RETURN(
      n, ReadFull(in, {reinterpret_cast<uint8_t*>(raw->data()) + kFixed, len + size_t{8}}));
  if (n < len + size_t{8}) return Corrupt("replication stream ended inside its header");
  StringSource src(*raw);
  storage::StreamReader reader(src);
  return reader.Begin();
}

// Sends what the store writes as D frames of kDataFrameBytes.
class FrameSink : public ByteSink {
 public:
  FrameSink(FramedConn& c, const PushOptions& o) : c_(c), o_(o) {}

  Status Write(std::span<const uint8_t> data) override {
    while (!data.empty()) {
      size_t n = std::min(data.size(), kDataFrameBytes - buf_.size());
      buf_.append(reinterpret_cast<const char*>(data.data()), n);
      data = data.subspan(n);
      if (buf_.size() == kDataFrameBytes) HC_RETURN_IF_ERROR(Flush());
    }
    return Status::Ok();
  }

  Status Flush() {
    if (buf_.empty()) return Status::Ok();
    // The receiver answers early only to end the transfer (damage, store
    // error): stop sending and let the caller read why.
    if (c_.PeerSpoke()) {
      peer_ended_ = true;
      return Unavailable("the replica ended the transfer early");
    }
    total_ += buf_.size();
    std::string frame = c_.Encode(kFrameData, buf_);
    buf_.clear();
    if (o_.corrupt_for_test) o_.corrupt_for_test(frames_, frame);
    ++frames_;
    HC_RETURN_IF_ERROR(c_.SendEncoded(frame));
    if (o_.progress) o_.progress(total_);
    return Status::Ok();
  }

  uint64_t total() const { return total_; }
  bool peer_ended() const { return peer_ended_; }

 private:
  FramedConn& c_;
  const PushOptions& o_;
  std::string buf_;
  uint64_t total_ = 0;
  uint64_t frames_ = 0;
  bool peer_ended_ = false;
};

// Rewrites the stream's header record with the placement epoch (the store
// writes 0: Store::Send takes no epoch) and passes everything else through.
// The epoch is a fixed-width field, so lengths and the end record's totals
// stay valid; the header record's check is recomputed by StreamWriter.
class StampEpochSink : public ByteSink {
 public:
  StampEpochSink(ByteSink& out, uint64_t epoch) : out_(out), epoch_(epoch) {}

  Status Write(std::span<const uint8_t> data) override {
    if (stamped_) return out_.Write(data);
    head_.append(reinterpret_cast<const char*>(data.data()), data.size());
    constexpr size_t kFixed = sizeof(storage::kStreamMagic) + 5;
    if (head_.size() < kFixed) return Status::Ok();
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i) len |= uint32_t{static_cast<uint8_t>(head_[9 + i])} << (8 * i);
    size_t whole = kFixed + len + 8;
    if (head_.size() < whole) return Status::Ok();
    StringSource src(std::string_view(head_).substr(0, whole));
    storage::StreamReader reader(src);
    HC_ASSIGN_OR_RETURN(storage::StreamHeader h, reader.Begin());
    h.epoch = epoch_;
    StringSink stamped;
    storage::StreamWriter writer(stamped);
    HC_RETURN_IF_ERROR(writer.Begin(h));
    HC_CHECK(stamped.out.size() == whole, "re-encoded stream header changed size");
    stamped_ = true;
    HC_RETURN_IF_ERROR(out_.Write(storage::AsBytes(stamped.out)));
    Status rest = out_.Write(storage::AsBytes(std::string_view(head_).substr(whole)));
    head_.clear();
    head_.shrink_to_fit();
    return rest;
  }

 private:
  ByteSink& out_;
  uint64_t epoch_;
  std::string head_;
  bool stamped_ = false;
};

Status RefusalStatus(const TransferAnswer& a) {
  std::string m = "the replica refused the transfer (" + std::string(RefuseReasonName(a.reason)) +
                  "): " + a.message;
  switch (a.reason) {
    case RefuseReason::kNotPrimary: return PermissionDenied(m);
    case RefuseReason::kBaseMissing:
    case RefuseReason::kDiverged: return Conflict(m);
    default: return Conflict(m);
  }
}

TransferAnswer Refuse(RefuseReason reason, std::string message, std::string newest = "") {
  return {Verdict::kRefused, reason, std::move(message), std::move(newest)};
}

// Reads and discards what the peer still sends until it closes (one
// deadline for all of it, so a trickling peer cannot hold the thread), after
// our last frame: closing first could reset the connection and lose that
// frame in transit.
void DrainUntilClosed(FramedConn& c) {
  ::shutdown(c.fd(), SHUT_WR);
  char sink[64 * 1024];
  net::Deadline drain_until = c.Deadline();
  while (true) {
    auto n = net::ReadSome(c.fd(), sink, sizeof sink, drain_until);
    if (!n.ok() || *n == 0) break;
  }
}

enum class RepairOutcome { kServed, kRefused, kFailed };

// Answers a repair fetch (a `G` frame already read) with `A`, then the
// store's repair stream in `D` frames and `F`.
RepairOutcome ServeRepairFetch(storage::Store& store, const std::string& node_id, FramedConn& c,
                               const std::string& payload, const std::string& peer_cn) {
  auto req = DecodeRepairRequest(payload);
  TransferAnswer answer;
  if (!req.ok()) {
    answer = Refuse(RefuseReason::kOther, req.status().message());
  } else if (req->requester_node != peer_cn) {
    answer = Refuse(RefuseReason::kOther, "the repair request names node '" + req->requester_node +
                                              "' but the certificate is node '" + peer_cn + "'");
  } else if (auto v = store.GetVolume(req->app); !v.ok()) {
    bool absent =
        v.status().code() == Code::kNotFound || v.status().code() == Code::kInvalidArgument;
    answer = absent ? Refuse(RefuseReason::kNoSuchApp,
                             "node '" + node_id + "' has no app '" + req->app + "'")
                    : Refuse(RefuseReason::kOther, "node '" + node_id + "' cannot serve '" +
                                                       req->app + "': " + v.status().message());
  }
  if (answer.verdict == Verdict::kRefused) {
    LogWarn("replication: refused a repair fetch from '%s': %s", peer_cn.c_str(),
            answer.message.c_str());
  }
  if (!c.Send(kFrameAnswer, EncodeAnswer(answer)).ok()) return RepairOutcome::kFailed;
  if (answer.verdict == Verdict::kRefused) return RepairOutcome::kRefused;
  static const PushOptions kNoHooks;
  FrameSink sink(c, kNoHooks);
  Status st = store.ExportRepair(req->app, req->object_ids, sink);
  if (st.ok()) st = sink.Flush();
  if (st.ok()) st = c.Send(kFrameFinish, EncodeFinish({sink.total()}));
  if (!st.ok()) {
    // Without `F` the fetcher sees the stream cut and applies nothing more.
    LogWarn("replication: repair fetch of '%s' by '%s' failed: %s", req->app.c_str(),
            peer_cn.c_str(), st.message().c_str());
    return RepairOutcome::kFailed;
  }
  LogInfo("replication: served %zu objects of '%s' to '%s' for repair (%llu bytes)",
          req->object_ids.size(), req->app.c_str(), peer_cn.c_str(),
          static_cast<unsigned long long>(sink.total()));
  DrainUntilClosed(c);
  return RepairOutcome::kServed;
}

}  // namespace

Receiver::Receiver(storage::Store& store, ReceiverOptions opts)
    : store_(store), opts_(std::move(opts)) {}

Receiver::~Receiver() {
  Stop();
}

void Receiver::Adopt(UniqueFd plain, const proxy::TlsConnInfo& info) {
  std::lock_guard lock(mu_);
  if (stopped_) return;  // `plain` closes here
  ReapLocked();
  if (conns_.size() >= static_cast<size_t>(opts_.max_connections)) {
    refused_++;
    LogWarn("replication: refused a connection from '%s': %d transfers in progress",
            info.peer_cn.c_str(), opts_.max_connections);
    return;
  }
  Conn& c = conns_.emplace_back();
  c.fd = std::move(plain);
  std::string cn = info.peer_cn;
  c.thread = std::thread([this, &c, cn] {
    Serve(c, cn);
    std::lock_guard l(mu_);
    c.done = true;
  });
}

void Receiver::ReapLocked() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (it->done) {
      it->thread.join();
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void Receiver::Stop() {
  std::list<Conn> conns;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    for (Conn& c : conns_) ::shutdown(c.fd.get(), SHUT_RDWR);
    conns.splice(conns.end(), conns_);
  }
  for (Conn& c : conns) c.thread.join();
}

Receiver::Stats Receiver::stats() const {
  uint64_t active = 0;
  {
    std::lock_guard lock(mu_);
    for (const Conn& c : conns_) active += c.done ? 0 : 1;
  }
  return {received_.load(), already_.load(),  refused_.load(),       failed_.load(),
          active,           diverged_.load(), repairs_served_.load()};
}

void Receiver::Serve(Conn& conn, std::string peer_cn) {
  FramedConn c(conn.fd.get(), opts_.io_timeout_ms);
  auto first = c.Read();
  if (!first.ok() || (first->type != kFrameRequest && first->type != kFrameRepairRequest)) {
    LogWarn("replication: connection from node '%s' ended before a request: %s", peer_cn.c_str(),
            first.ok() ? "first frame is not a request" : first.status().message().c_str());
    failed_++;
    return;
  }
  if (first->type == kFrameRepairRequest) {
    switch (ServeRepairFetch(store_, opts_.node_id, c, first->payload, peer_cn)) {
      case RepairOutcome::kServed: repairs_served_++; break;
      case RepairOutcome::kRefused: refused_++; break;
      case RepairOutcome::kFailed: failed_++; break;
    }
    return;
  }
  auto req = DecodeRequest(first->payload);
  TransferAnswer answer;
  if (!req.ok()) {
    answer = Refuse(RefuseReason::kOther, req.status().message());
  } else if (req->sender_node != peer_cn) {
    answer = Refuse(RefuseReason::kOther, "the request names node '" + req->sender_node +
                                              "' but the certificate is node '" + peer_cn + "'");
  } else if (req->resume_offset != 0) {
    answer = Refuse(RefuseReason::kOther, "resuming a transfer is not supported yet");
  } else if (Status p = opts_.is_primary(req->app, req->sender_node, req->epoch); !p.ok()) {
    answer = Refuse(RefuseReason::kNotPrimary,
                    "node '" + req->sender_node + "' is not the primary of '" + req->app +
                        "' at epoch " + std::to_string(req->epoch) + ": " + p.message());
  } else {
    auto snaps = store_.ListSnapshots(req->app);
    if (!snaps.ok() && snaps.status().code() != Code::kNotFound) {
      answer = Refuse(RefuseReason::kOther, snaps.status().message());
    } else {
      std::vector<storage::SnapshotInfo> have;
      if (snaps.ok()) have = std::move(*snaps);
      std::string newest = have.empty() ? "" : have.back().id;
      auto has = [&](const std::string& id) {
        return std::any_of(have.begin(), have.end(), [&](auto& s) { return s.id == id; });
      };
      if (has(req->target_id)) {
        answer = {Verdict::kAlreadyPresent, RefuseReason::kNone, "", newest};
      } else if (req->base_id.empty() && !have.empty()) {
        answer =
            Refuse(RefuseReason::kDiverged,
                   "volume '" + req->app + "' on node '" + opts_.node_id + "' has " +
                       std::to_string(have.size()) + " snapshots; a full stream would replace them",
                   newest);
      } else if (!req->base_id.empty() && !has(req->base_id)) {
        answer = Refuse(RefuseReason::kBaseMissing,
                        "node '" + opts_.node_id + "' has no snapshot " + req->base_id + " of '" +
                            req->app + "'",
                        newest);
      } else if (!req->base_id.empty() && req->base_id != newest) {
        // Divergence: this copy has snapshots the primary (at its current
        // epoch) does not build on, e.g. writes of a fenced primary. They
        // are kept as a browsable branch volume, never overwritten.
        auto kept = KeepDiverged(*req, have);
        if (!kept.ok()) {
          answer = Refuse(RefuseReason::kDiverged,
                          "volume '" + req->app + "' on node '" + opts_.node_id +
                              "' has snapshots newer than the base " + req->base_id +
                              " and keeping them as a branch failed: " + kept.status().message(),
                          newest);
        } else {
          answer = {Verdict::kAccept, RefuseReason::kNone, "", req->base_id};
        }
      } else {
        answer = {Verdict::kAccept, RefuseReason::kNone, "", newest};
      }
    }
  }
  // One transfer per app at a time: the store would serialise them anyway,
  // and the spool file is per app.
  std::string app_busy;
  if (answer.verdict == Verdict::kAccept) {
    std::lock_guard lock(mu_);
    if (busy_apps_.insert(req->app).second) {
      app_busy = req->app;
    } else {
      answer = Refuse(RefuseReason::kOther, "a transfer of '" + req->app + "' to node '" +
                                                opts_.node_id + "' is already in progress");
    }
  }
  struct ReleaseApp {
    Receiver* r;
    const std::string& app;
    ~ReleaseApp() {
      if (app.empty()) return;
      std::lock_guard lock(r->mu_);
      r->busy_apps_.erase(app);
    }
  } release_app{this, app_busy};

  std::string part, key_path;
  UniqueFd spool;
  if (!app_busy.empty() && !opts_.spool_dir.empty() && ValidateName("app", req->app).ok()) {
    part = JoinPath(opts_.spool_dir, req->app + ".part");
    key_path = JoinPath(opts_.spool_dir, req->app + ".key");
    std::string key = req->base_id + "\n" + req->target_id + "\n";
    auto old_key = ReadFileToString(key_path);
    struct stat sb;
    if (old_key.ok() && *old_key == key && ::stat(part.c_str(), &sb) == 0) {
      answer.resume_offset = static_cast<uint64_t>(sb.st_size);
      LogInfo("replication: resuming the transfer of '%s' from '%s' after %llu bytes",
              req->app.c_str(), peer_cn.c_str(),
              static_cast<unsigned long long>(answer.resume_offset));
    } else {
      ::unlink(part.c_str());
      if (!MakeDirs(opts_.spool_dir, 0700).ok() ||
          !WriteFileAtomic(key_path, key, false, 0600).ok()) {
        part.clear();
      }
    }
    if (!part.empty()) {
      auto fd = OpenFile(part, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd.ok()) {
        spool = std::move(*fd);
      } else {
        part.clear();
        answer.resume_offset = 0;
      }
    }
  }

  // Counted before the peer can see the outcome, so stats() agree with
  // what a sender has been told.
  if (answer.verdict == Verdict::kAlreadyPresent) already_++;
  if (answer.verdict == Verdict::kRefused) {
    refused_++;
    LogWarn("replication: refused a transfer of '%s' from '%s': %s",
            req.ok() ? req->app.c_str() : "?", peer_cn.c_str(), answer.message.c_str());
  }
  if (Status s = c.Send(kFrameAnswer, EncodeAnswer(answer)); !s.ok()) {
    if (answer.verdict == Verdict::kAccept) failed_++;
    return;
  }
  if (answer.verdict != Verdict::kAccept) return;

  FrameSource frames(c);
  TeeSource tee(frames, spool.get());
  UniqueFd prefix_fd;
  Status st;
  if (answer.resume_offset > 0) {
    auto fd = OpenFile(part, O_RDONLY | O_CLOEXEC);
    if (fd.ok())
      prefix_fd = std::move(*fd);
    else
      st = fd.status();
  }
  FdSource prefix(prefix_fd.get());
  ConcatSource all(prefix, answer.resume_offset, tee);
  TransferResult result;
  std::string raw;
  Result<storage::StreamHeader> header =
      st.ok() ? PeekStreamHeader(all, &raw) : Result<storage::StreamHeader>(st);
  if (!header.ok()) {
    st = header.status();
  } else if (header->epoch != req->epoch) {
    st = Corrupt("the stream carries epoch " + std::to_string(header->epoch) +
                 " but the request announced epoch " + std::to_string(req->epoch));
  } else if (header->to_id != req->target_id || header->from_id != req->base_id) {
    st = Corrupt("the stream recreates " + header->to_id + " from '" + header->from_id +
                 "' but the request announced " + req->target_id + " from '" + req->base_id + "'");
  } else {
    PrefixSource in(std::move(raw), all);
    auto got = store_.Receive(req->app, in, {.read_only = true});
    if (!got.ok()) {
      st = got.status();
    } else {
      result.snapshot_id = got->snapshot.id;
      result.already_present = got->already_present;
      // The store stops at the stream's end record; the F frame must follow.
      uint8_t extra[1];
      auto n = frames.Read(extra);
      if (!n.ok()) {
        st = n.status();
      } else if (*n != 0) {
        st = Corrupt("bytes after the end of the stream (snapshot " + got->snapshot.id +
                     " was stored intact)");
      }
    }
  }
  // Keep the spooled bytes only when the network cut the transfer: after
  // bad bytes or a store error, the next attempt starts from the beginning.
  if (!part.empty() && (st.ok() || !frames.transport_failed())) {
    ::unlink(part.c_str());
    ::unlink(key_path.c_str());
  }
  if (st.ok()) {
    received_++;
    LogInfo("replication: received '%s' snapshot %s from '%s' (%llu bytes)", req->app.c_str(),
            result.snapshot_id.c_str(), peer_cn.c_str(),
            static_cast<unsigned long long>(frames.total()));
  } else {
    failed_++;
    result.code = st.code();
    result.message = st.message();
    LogWarn("replication: transfer of '%s' from '%s' failed: %s", req->app.c_str(), peer_cn.c_str(),
            st.message().c_str());
  }
  if (!c.Send(kFrameResult, EncodeResult(result)).ok()) return;
  // Wait for the sender to read the result and close: closing first could
  // reset the connection and lose the result in transit. Whatever it still
  // sends is discarded.
  ::shutdown(c.fd(), SHUT_WR);
  // One deadline for the whole drain, so a peer trickling bytes cannot hold
  // the thread.
  char sink[64 * 1024];
  net::Deadline drain_until = c.Deadline();
  while (true) {
    auto n = net::ReadSome(c.fd(), sink, sizeof sink, drain_until);
    if (!n.ok() || *n == 0) break;
  }
}

Result<std::string> Receiver::KeepDiverged(const TransferRequest& req,
                                           const std::vector<storage::SnapshotInfo>& have) {
  std::string base_name;
  size_t newer = 0;
  for (size_t i = 0; i < have.size(); ++i) {
    if (have[i].id == req.base_id) {
      base_name = have[i].name;
      newer = have.size() - i - 1;
    }
  }
  std::string branch = req.app + "-diverged-" + std::to_string(time(nullptr));
  if (branch.size() > 64) branch = branch.substr(branch.size() - 64);
  HC_ASSIGN_OR_RETURN(auto rb, store_.Rollback(req.app, base_name, {.branch_name = branch}));
  diverged_++;
  std::string detail = std::to_string(newer) + " snapshot(s) after " + base_name + " (newest " +
                       have.back().name + ") that primary '" + req.sender_node + "' at epoch " +
                       std::to_string(req.epoch) + " does not have";
  LogWarn("replication: '%s' diverged on this node: kept %s as volume '%s'", req.app.c_str(),
          detail.c_str(), rb.branch.c_str());
  if (opts_.on_diverged) opts_.on_diverged(req.app, rb.branch, detail);
  return rb.branch;
}

Result<PushResult> Push(storage::Store& store, int conn, const PushOptions& opts) {
  HC_ASSIGN_OR_RETURN(auto snaps, store.ListSnapshots(opts.app));
  auto name_of = [&](const std::string& id) -> Result<std::string> {
    for (auto& s : snaps) {
      if (s.id == id) return s.name;
    }
    return NotFound("volume '" + opts.app + "' has no snapshot with id " + id);
  };
  HC_ASSIGN_OR_RETURN(std::string target_name, name_of(opts.target_id));
  std::optional<std::string> base_name;
  if (!opts.base_id.empty()) {
    HC_ASSIGN_OR_RETURN(base_name, name_of(opts.base_id));
  }

  FramedConn c(conn, opts.io_timeout_ms);
  TransferRequest req{opts.app, opts.sender_node, opts.epoch, opts.base_id, opts.target_id, 0};
  HC_RETURN_IF_ERROR(c.Send(kFrameRequest, EncodeRequest(req)));
  HC_ASSIGN_OR_RETURN(Frame af, c.Read());
  if (af.type != kFrameAnswer) return Corrupt("the replica did not answer the request");
  HC_ASSIGN_OR_RETURN(TransferAnswer answer, DecodeAnswer(af.payload));
  if (opts.receiver_newest != nullptr) *opts.receiver_newest = answer.receiver_newest_id;
  if (answer.verdict == Verdict::kAlreadyPresent) {
    return PushResult{opts.target_id, true, 0, 0};
  }
  if (answer.verdict == Verdict::kRefused) return RefusalStatus(answer);

  FrameSink sink(c, opts);
  SkipSink skip(sink, answer.resume_offset);
  StampEpochSink stamp(skip, opts.epoch);
  Status sent = store.Send(opts.app, base_name, target_name, stamp);
  if (sent.ok()) sent = sink.Flush();
  if (sent.ok()) sent = c.Send(kFrameFinish, EncodeFinish({sink.total()}));
  if (!sent.ok() && !sink.peer_ended()) {
    // A local failure: closing the connection makes the receiver drop the
    // partial stream. A write failure may still have a result behind it.
    if (sent.code() != Code::kUnavailable) return sent;
  }
  auto rf = c.Read();
  if (!rf.ok()) return sent.ok() ? rf.status() : sent;
  if (rf->type != kFrameResult) return Corrupt("the replica sent no result");
  HC_ASSIGN_OR_RETURN(TransferResult r, DecodeResult(rf->payload));
  if (r.code != Code::kOk) {
    return Status(r.code, "the replica rejected the stream: " + r.message);
  }
  if (!sent.ok()) return sent;
  if (r.snapshot_id != opts.target_id) {
    return Internal("the replica stored snapshot " + r.snapshot_id + ", not " + opts.target_id);
  }
  return PushResult{r.snapshot_id, r.already_present, sink.total(), answer.resume_offset};
}

Result<FetchRepairResult> FetchRepair(storage::Store& store, int conn,
                                      const FetchRepairOptions& opts) {
  static_assert(kMaxRepairObjectIds == storage::kMaxRepairObjects);
  if (opts.object_ids.empty()) return InvalidArgument("a repair fetch needs object ids");
  if (opts.object_ids.size() > kMaxRepairObjectIds) {
    return InvalidArgument("a repair fetch asks for " + std::to_string(opts.object_ids.size()) +
                           " objects; at most " + std::to_string(kMaxRepairObjectIds) +
                           " per fetch");
  }
  FramedConn c(conn, opts.io_timeout_ms);
  RepairRequest req{opts.app, opts.requester_node, opts.object_ids};
  HC_RETURN_IF_ERROR(c.Send(kFrameRepairRequest, EncodeRepairRequest(req)));
  HC_ASSIGN_OR_RETURN(Frame af, c.Read());
  if (af.type != kFrameAnswer) return Corrupt("the peer did not answer the repair request");
  HC_ASSIGN_OR_RETURN(TransferAnswer answer, DecodeAnswer(af.payload));
  if (answer.verdict == Verdict::kRefused) {
    std::string m = "the peer refused the repair fetch: " + answer.message;
    return answer.reason == RefuseReason::kNoSuchApp ? NotFound(m) : Conflict(m);
  }
  if (answer.verdict != Verdict::kAccept) {
    return Corrupt("the peer answered the repair request with an unexpected verdict");
  }
  FrameSource frames(c);
  FetchRepairResult result;
  HC_ASSIGN_OR_RETURN(result.repair, store.ApplyRepair(opts.app, frames));
  // The store stops at the repair stream's end record; the F frame must follow.
  uint8_t extra[1];
  HC_ASSIGN_OR_RETURN(size_t n, frames.Read(extra));
  if (n != 0) return Corrupt("the peer sent bytes after the end of the repair stream");
  result.stream_bytes = frames.total();
  std::set<std::string> intact(result.repair.intact_ids.begin(), result.repair.intact_ids.end());
  std::set<std::string> listed;
  for (const auto& id : opts.object_ids) {
    if (intact.count(id) == 0 && listed.insert(id).second) result.still_damaged.push_back(id);
  }
  return result;
}

Result<ScrubAndRepairResult> ScrubAndRepair(storage::Store& store,
                                            const ScrubAndRepairOptions& opts) {
  ScrubAndRepairResult result;
  while (result.rounds < opts.max_rounds) {
    HC_ASSIGN_OR_RETURN(result.last, store.Scrub(opts.app, opts.scrub));
    ++result.rounds;
    if (result.last.ok()) break;
    std::vector<std::string> remaining = result.last.RepairRequestIds();
    uint64_t before = result.repaired;
    for (const auto& [peer, connect] : opts.peers) {
      std::vector<std::string> still;
      for (size_t i = 0; i < remaining.size(); i += kMaxRepairObjectIds) {
        size_t end = std::min(remaining.size(), i + kMaxRepairObjectIds);
        std::vector<std::string> batch(remaining.begin() + i, remaining.begin() + end);
        Result<FetchRepairResult> got = Unavailable("not connected");
        bool ran = false;
        auto fetch = [&]() -> Status {
          ran = true;
          auto fd = connect();
          if (!fd.ok()) {
            got = fd.status();
          } else {
            got = FetchRepair(store, fd->get(),
                              {.app = opts.app,
                               .requester_node = opts.node_id,
                               .object_ids = batch,
                               .io_timeout_ms = opts.io_timeout_ms});
          }
          return got.status();
        };
        if (opts.around_repair) {
          Status around = opts.around_repair(fetch);
          // E.g. the app could not be stopped (nothing ran) or restarted.
          if ((!ran || got.ok()) && !around.ok()) got = around;
        } else {
          (void)fetch();
        }
        if (got.ok() && !got->repair.kept_branch.empty()) {
          result.kept_branches.push_back(got->repair.kept_branch);
        }
        if (!got.ok()) {
          result.peer_errors.push_back(peer + ": " + got.status().ToString());
          still.insert(still.end(), batch.begin(), batch.end());
          continue;
        }
        result.repaired += got->repair.repaired;
        still.insert(still.end(), got->still_damaged.begin(), got->still_damaged.end());
      }
      remaining = std::move(still);
      if (remaining.empty()) break;
    }
    if (result.repaired == before) break;
  }
  if (!result.last.ok()) {
    LogWarn("replication: '%s' on '%s' still has %zu damaged objects after repair (%llu repaired)",
            opts.app.c_str(), opts.node_id.c_str(), result.last.problems.size(),
            static_cast<unsigned long long>(result.repaired));
  }
  return result;
}

}  // namespace hc::replication
