// App templates: what a hoster picks on day one. Each turns a few choices into
// an AppSpec the runtime can run with either backend.
//   static   - busybox httpd serving the volume's public/ folder
//   command  - any command line (run through /bin/sh -c)
//   postgres - PostgreSQL with its data directory in the volume (initdb on first run)
//   mariadb  - MariaDB with its data directory in the volume (mariadb-install-db on first run)
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/app_spec.h"

namespace hc::runtime {

struct TemplateRequest {
  std::string template_name;  // one of TemplateNames()
  std::string app_name;
  std::string volume_path;
  uint16_t port = 0;
  std::string command;  // "command" template only: the shell command line
  std::vector<std::string> env;
  Limits limits;
};

std::vector<std::string> TemplateNames();

// Fills argv, env, probe and template_name; the rest of the request is copied.
// NotFound when a program the template needs is missing ("postgres needs the
// Debian package postgresql"); InvalidArgument for an unknown template.
Result<AppSpec> ApplyTemplate(const TemplateRequest& req);

// Creates what a template expects in a fresh volume (static: public/index.html
// with a welcome page) without overwriting anything already there.
Status SeedVolume(const std::string& template_name, const std::string& volume_path,
                  const std::string& app_name);

}  // namespace hc::runtime
