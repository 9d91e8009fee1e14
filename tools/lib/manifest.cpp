#include "tools/lib/manifest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tensor/error.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/report.h"

namespace trick {

namespace {

const std::set<std::string> kSettingColumns = {"method", "eps",      "step", "steps",     "confidence",
                                               "norm",   "restarts", "seed", "untargeted", "true_class"};

// One CSV record (RFC 4180 quoting) from `text` starting at `pos`; advances pos and line.
std::vector<std::string> csv_record(const std::string& text, size_t& pos, int& line, const std::string& path) {
  std::vector<std::string> fields(1);
  bool quoted = false, was_quoted = false;
  const int start_line = line;
  while (pos < text.size()) {
    const char c = text[pos++];
    if (quoted) {
      if (c == '"') {
        if (pos < text.size() && text[pos] == '"') {
          fields.back() += '"';
          ++pos;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        fields.back() += c;
      }
      continue;
    }
    if (c == '"') {
      TRICK_CHECK(fields.back().find_first_not_of(" \t") == std::string::npos && !was_quoted, path, ":", line,
                  ": a quote inside an unquoted field");
      fields.back().clear();
      quoted = was_quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
      was_quoted = false;
    } else if (c == '\n') {
      ++line;
      break;
    } else if (c != '\r') {
      TRICK_CHECK(!was_quoted || c == ' ' || c == '\t', path, ":", line, ": text after a closing quote");
      if (!was_quoted) fields.back() += c;
    }
  }
  TRICK_CHECK(!quoted, path, ":", start_line, ": a quoted field is never closed");
  for (std::string& f : fields) {  // trim
    const size_t a = f.find_first_not_of(" \t"), b = f.find_last_not_of(" \t");
    f = a == std::string::npos ? std::string() : f.substr(a, b - a + 1);
  }
  return fields;
}

std::string safe_name(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  if (out.empty() || out == "." || out == "..") out = "row";
  return out;
}

std::string stem(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  const size_t dot = base.find_last_of('.');
  return dot != std::string::npos && dot > 0 ? base.substr(0, dot) : base;
}

bool file_exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

std::vector<ManifestRow> read_manifest(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) fail(path, ": is a directory, not a manifest (CSV) file");
  std::ifstream in(path, std::ios::binary);
  TRICK_CHECK(in, path, ": cannot read the manifest: ", std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  TRICK_CHECK(!in.bad(), path, ": read error");
  const std::string text = os.str();
  // A binary file (an image given by mistake, a damaged file) is said to be one, rather than
  // read as a header of garbled column names.
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char ch = static_cast<unsigned char>(text[i]);
    if (ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r')
      fail(path, ": not a CSV text file (control byte 0x", "0123456789abcdef"[ch >> 4], "0123456789abcdef"[ch & 15],
           " at offset ", i, ")");
  }
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.find_last_of('/'));
  // A UTF-8 byte-order mark (spreadsheets write one when saving "CSV UTF-8") is not part of
  // the first column's name.
  size_t pos = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int line = 1;
  std::vector<std::string> header;
  std::vector<ManifestRow> rows;
  std::set<std::string> ids;
  while (pos < text.size()) {
    const int at = line;
    // Skip blank lines and comments.
    const size_t eol = text.find('\n', pos);
    const std::string raw = text.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
    const size_t first = raw.find_first_not_of(" \t\r");
    if (first == std::string::npos || raw[first] == '#') {
      pos = eol == std::string::npos ? text.size() : eol + 1;
      ++line;
      continue;
    }
    std::vector<std::string> f = csv_record(text, pos, line, path);
    if (header.empty()) {
      header = f;
      std::set<std::string> seen;
      for (const std::string& h : header) {
        TRICK_CHECK(h == "image" || h == "target" || h == "id" || kSettingColumns.count(h), path, ":", at,
                    ": unknown column '", h, "' (known: image, target, id, method, eps, step, steps, confidence, ",
                    "norm, restarts, seed, untargeted, true_class)");
        TRICK_CHECK(seen.insert(h).second, path, ":", at, ": column '", h, "' appears twice");
      }
      TRICK_CHECK(seen.count("image"), path, ":", at, ": the header has no 'image' column");
      continue;
    }
    TRICK_CHECK(f.size() == header.size(), path, ":", at, ": ", f.size(), " fields, the header has ", header.size());
    ManifestRow r;
    r.line = at;
    r.position = rows.size();
    for (size_t i = 0; i < f.size(); ++i) {
      const std::string& h = header[i];
      if (h == "image") r.image = f[i];
      else if (h == "target") r.target = f[i];
      else if (h == "id") r.id = f[i];
      else if (!f[i].empty()) r.settings[h] = f[i];
    }
    TRICK_CHECK(!r.image.empty(), path, ":", at, ": the image field is empty");
    if (r.image[0] != '/') r.image = dir + "/" + r.image;
    char num[32];
    std::snprintf(num, sizeof num, "%05zu", rows.size() + 1);
    r.id = r.id.empty() ? std::string(num) + "-" + safe_name(stem(r.image)) : safe_name(r.id);
    TRICK_CHECK(ids.insert(r.id).second, path, ":", at, ": id '", r.id, "' is used by an earlier row");
    rows.push_back(std::move(r));
  }
  TRICK_CHECK(!header.empty(), path, ": the manifest is empty (it needs a header row: image,target,...)");
  return rows;
}

Shard parse_shard(const std::string& s) {
  Shard sh;
  const size_t slash = s.find('/');
  auto number = [&](const std::string& t) {
    TRICK_CHECK(!t.empty() && t.size() < 8 && t.find_first_not_of("0123456789") == std::string::npos,
                "--shard must be i/N with 0 <= i < N, got '", s, "'");
    return std::stoi(t);
  };
  TRICK_CHECK(slash != std::string::npos, "--shard must be i/N with 0 <= i < N, got '", s, "'");
  sh.index = number(s.substr(0, slash));
  sh.count = number(s.substr(slash + 1));
  TRICK_CHECK(sh.count >= 1 && sh.index < sh.count, "--shard must be i/N with 0 <= i < N, got '", s, "'");
  return sh;
}

RowState row_state(const std::string& out_dir, const ManifestRow& row) {
  const std::string d = out_dir + "/" + row.id + "/";
  if (file_exists(d + "summary.json")) return RowState::Done;
  if (file_exists(d + "error.json")) return RowState::Failed;
  return RowState::Pending;
}

void write_row_error(const std::string& out_dir, const ManifestRow& row, const std::string& message) {
  const std::string d = out_dir + "/" + row.id;
  ensure_directory(d);
  atomic_write(d + "/error.json", nlohmann::json{{"image", row.image}, {"target", row.target}, {"error", message}}
                                      .dump(2) + "\n");
}

void clear_row_error(const std::string& out_dir, const ManifestRow& row) {
  unlink((out_dir + "/" + row.id + "/error.json").c_str());
}

ManifestCounts write_results(const std::string& out_dir, const std::vector<ManifestRow>& rows) {
  ManifestCounts n;
  std::ostringstream os;
  // class_index, class_label: the class the row attacked toward (or, untargeted, away from), as
  // resolved: a name, least-likely or random in the target column becomes its class here.
  os << "id,image,target,status,success_float,success_8bit,steps,linf_255,l2_255,final_label_prob,seconds,error,"
        "class_index,class_label\n";
  for (const ManifestRow& r : rows) {
    const std::string d = out_dir + "/" + r.id + "/";
    os << csv_field(r.id) << ',' << csv_field(r.image) << ',' << csv_field(r.target) << ',';
    const RowState st = row_state(out_dir, r);
    if (st == RowState::Done) {
      std::ostringstream row;
      bool ok = false;
      try {
        const nlohmann::json j = nlohmann::json::parse(read_file(d + "summary.json"));
        ok = j.at("success").at("8bit").get<bool>();
        row << "done," << j.at("success").at("float").get<bool>() << ',' << ok << ',' << j.at("steps") << ','
            << j.at("norms_255").at("linf") << ',' << j.at("norms_255").at("l2") << ','
            << j.at("final_label_prob") << ',' << j.at("wall_seconds") << ",,";
        const char* key = j.contains("target") ? "target" : j.contains("true_class") ? "true_class" : nullptr;
        if (key)
          row << j.at(key).at("index").get<int>() << ',' << csv_field(j.at(key).at("label").get<std::string>());
        else
          row << ',';  // a summary without the class (written by hand): the columns stay empty
        row << "\n";
      } catch (const std::exception&) {
        os << "unreadable,,,,,,,,summary.json does not parse or lacks a field,,\n";
        ++n.failed;
        continue;
      }
      ++n.done;
      n.succeeded += ok;
      os << row.str();
    } else if (st == RowState::Failed) {
      ++n.failed;
      std::string msg;
      try {
        msg = nlohmann::json::parse(read_file(d + "error.json"))["error"].get<std::string>();
      } catch (const std::exception&) {
        msg = "error.json does not parse";
      }
      os << "failed,,,,,,,," << csv_field(msg) << ",,\n";
    } else {
      ++n.pending;
      os << "pending,,,,,,,,,,\n";
    }
  }
  atomic_write(out_dir + "/results.csv", os.str());
  return n;
}

namespace {

const char* kBatchStyle = R"(
body { font-family: "DejaVu Sans", Verdana, sans-serif; color: #1f1f1f; margin: 24px auto; max-width: 1200px;
       padding: 0 16px; line-height: 1.4; }
h1 { font-size: 22px; margin: 0 0 8px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: middle; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { height: 72px; border: 1px solid #ccc; image-rendering: pixelated; }
.ok { color: #1a8c33; font-weight: bold; }
.partial { color: #b36b00; font-weight: bold; }
.bad { color: #d62728; font-weight: bold; }
)";

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(digits);
  os << v;
  return os.str();
}

}  // namespace

std::string batch_index_html(const std::string& out_dir, const std::vector<ManifestRow>& rows,
                             const std::string& title) {
  std::ostringstream body;
  int done = 0, reached = 0, failed = 0, pending = 0;
  for (const ManifestRow& r : rows) {
    const std::string d = out_dir + "/" + r.id + "/";
    const std::string link = html_escape(url_path_escape(r.id + "/"));
    body << "<tr><td><a href=\"" << link << "index.html\">" << html_escape(r.id) << "</a></td>";
    const RowState st = row_state(out_dir, r);
    if (st == RowState::Done) {
      try {
        const nlohmann::json j = nlohmann::json::parse(read_file(d + "summary.json"));
        const bool f = j.at("success").at("float").get<bool>(), b = j.at("success").at("8bit").get<bool>();
        const char* key = j.contains("target") ? "target" : "true_class";
        const std::string label = j.contains(key) ? j.at(key).at("label").get<std::string>() : r.target;
        const nlohmann::json& out = j.contains("outputs") ? j.at("outputs") : nlohmann::json::object();
        auto pic = [&](const char* name, const char* alt) {
          if (!out.contains(name)) return std::string();
          return "<img src=\"" + link + html_escape(url_path_escape(out.at(name).get<std::string>())) +
                 "\" alt=\"" + alt + "\">";
        };
        body << "<td>" << pic("original", "original") << "</td><td>" << pic("adversarial", "adversarial")
             << "</td><td>" << (j.value("targeted", true) ? "" : "away from ") << html_escape(label) << "</td>";
        body << "<td class=\"" << (b ? "ok\">yes" : f ? "partial\">float only" : "bad\">no") << "</td>";
        body << "<td class=\"n\">" << j.at("steps").get<int>() << "</td><td class=\"n\">"
             << fixed(j.at("norms_255").at("linf").get<double>(), 1) << "</td><td class=\"n\">"
             << fixed(j.at("norms_255").at("l2").get<double>(), 1) << "</td><td class=\"n\">"
             << fixed(100.0 * j.at("final_label_prob").get<double>(), 2) << "%</td><td>"
             << html_escape(j.value("image", r.image)) << "</td></tr>\n";
        ++done;
        reached += b;
      } catch (const std::exception&) {
        body << "<td colspan=\"9\" class=\"bad\">summary.json does not parse or lacks a field</td></tr>\n";
        ++failed;
      }
    } else if (st == RowState::Failed) {
      std::string msg;
      try {
        msg = nlohmann::json::parse(read_file(d + "error.json"))["error"].get<std::string>();
      } catch (const std::exception&) {
        msg = "error.json does not parse";
      }
      body << "<td colspan=\"8\" class=\"bad\">failed: " << html_escape(msg) << "</td><td>" << html_escape(r.image)
           << "</td></tr>\n";
      ++failed;
    } else {
      body << "<td colspan=\"8\">pending</td><td>" << html_escape(r.image) << "</td></tr>\n";
      ++pending;
    }
  }
  std::ostringstream s;
  s << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" << html_escape(title)
    << "</title>\n<style>" << kBatchStyle << "</style>\n</head>\n<body>\n<h1>" << html_escape(title) << "</h1>\n";
  s << "<p>" << rows.size() << " attack" << (rows.size() == 1 ? "" : "s") << ": " << done << " done (" << reached
    << " reached the class after rounding to 8-bit pixels), " << failed << " failed, " << pending
    << " pending. Each row links to its own page.</p>\n";
  s << "<table>\n<tr><th>attack</th><th>original</th><th>adversarial</th><th>class</th><th>reached (8-bit)</th>"
       "<th>steps</th><th>L\u221e /255</th><th>L2 /255</th><th>final prob.</th><th>image</th></tr>\n"
    << body.str() << "</table>\n</body>\n</html>\n";
  return s.str();
}

void write_batch_index(const std::string& out_dir, const std::vector<ManifestRow>& rows, const std::string& title) {
  atomic_write(out_dir + "/index.html", batch_index_html(out_dir, rows, title));
}

}  // namespace trick
