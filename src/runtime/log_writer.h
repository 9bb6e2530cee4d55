// The per-app log: the app's stdout and stderr as lines, each prefixed with
// the time and the stream ("2026-11-25T14:02:03.123Z out | listening"), in
// <dir>/app.log, rotated to app.log.1 .. app.log.N when it passes max_bytes.
// Lines longer than 16 KiB are split. Owned by one supervisor thread.
#pragma once

#include <stdint.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/fs.h"
#include "common/status.h"

namespace hc::runtime {

class LogWriter {
 public:
  // `max_bytes` 0 never rotates. `keep_files` 0 truncates app.log instead of
  // keeping rotated copies. A line never straddles two files; a file passes
  // max_bytes only when a single line is longer than max_bytes.
  LogWriter(std::string path, uint64_t max_bytes, int keep_files);

  // Creates the file (0640) or opens it for appending. Append, Note and Flush
  // also open it when it is not open (before Open, or after a failed rotation).
  Status Open();

  // Appends bytes read from `stream` ("out" or "err"); partial lines are kept
  // per stream until their newline arrives (or Flush).
  Status Append(std::string_view stream, std::string_view bytes);

  // A line written by the supervisor itself ("hc" stream): starts, exits, kills.
  Status Note(std::string_view line);

  // Writes pending partial lines.
  Status Flush();

  // All of the above return errors (with the path) from the file system; the
  // lines of a failed call may be lost, the writer stays usable.

 private:
  struct Pending {
    std::string stream;
    std::string bytes;  // the unfinished line, at most 16 KiB
  };

  std::string& PendingFor(std::string_view stream);
  // Formats `line` (split into pieces of at most 16 KiB) into out_, writing
  // out_ and rotating first when a piece would take the file past max_bytes_.
  Status AddLine(std::string_view stamp, std::string_view stream, std::string_view line);
  Status AddPiece(std::string_view stamp, std::string_view stream, std::string_view piece);
  Status WriteOut();
  Status Rotate();

  std::string path_;
  uint64_t max_bytes_;
  int keep_files_;
  UniqueFd fd_;
  uint64_t size_ = 0;             // bytes in the open file
  std::vector<Pending> pending_;  // one per stream seen; a handful at most
  std::string out_;               // formatted lines not yet written
};

}  // namespace hc::runtime
