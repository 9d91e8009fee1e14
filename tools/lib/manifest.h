// Many attacks from one file: `trick attack --manifest jobs.csv --out DIR [--shard i/N]`.
//
// jobs.csv has a header row; columns:
//   image      (required) path, relative to the manifest's folder unless absolute
//   target     class index or name (required unless the row is untargeted)
//   id         optional folder name for the row's outputs (default: row number + image name)
//   method, eps, step, steps, confidence, norm, restarts, seed, untargeted, true_class
//              optional per-row settings overriding the command line's
// Blank lines and lines starting with '#' are skipped; fields may be quoted ("a, b").
//
// Each row's outputs go to DIR/<id>/. A finished row has DIR/<id>/summary.json; a row that
// failed has DIR/<id>/error.json. Running again skips finished rows (and retries failed
// ones), so an interrupted or preempted job just runs again. --shard i/N takes the rows whose
// 0-based position p has p % N == i, so N processes (a Slurm job array, GNU parallel, an
// indexed Kubernetes job) split the file without talking to each other. DIR/results.csv is
// rewritten atomically after every row from what is on disk, so every shard's snapshot
// covers all shards' finished rows.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace trick {

struct ManifestRow {
  int line = 0;       // in the file, for messages
  size_t position = 0;  // 0-based among the rows (sharding)
  std::string id, image, target;
  std::map<std::string, std::string> settings;  // optional columns that were not empty
};

// Throws naming the file and line: missing file, no header, unknown or missing columns,
// bad quoting, duplicate ids, an empty image field.
std::vector<ManifestRow> read_manifest(const std::string& path);

struct Shard {
  int index = 0, count = 1;
  bool contains(const ManifestRow& r) const { return static_cast<int>(r.position % count) == index; }
};
Shard parse_shard(const std::string& s);  // "i/N" with 0 <= i < N

enum class RowState { Pending, Done, Failed };
RowState row_state(const std::string& out_dir, const ManifestRow& row);

// Records a row's error (DIR/<id>/error.json) / clears it.
void write_row_error(const std::string& out_dir, const ManifestRow& row, const std::string& message);
void clear_row_error(const std::string& out_dir, const ManifestRow& row);

// DIR/results.csv from the rows' summary.json / error.json files; returns counts.
struct ManifestCounts {
  int done = 0, failed = 0, pending = 0, succeeded = 0;
};
ManifestCounts write_results(const std::string& out_dir, const std::vector<ManifestRow>& rows);

// DIR/index.html for several attacks (a manifest's rows, or the images of one `trick attack
// a.png b.png ...`): one line per row with its original and adversarial pictures, the class,
// whether it worked (float and 8-bit), steps, norms and the class's final probability,
// linking to the row's own index.html; failed and pending rows say so. Read from the rows'
// summary.json / error.json, written atomically; self-contained like the single page.
std::string batch_index_html(const std::string& out_dir, const std::vector<ManifestRow>& rows,
                             const std::string& title);
void write_batch_index(const std::string& out_dir, const std::vector<ManifestRow>& rows, const std::string& title);

}  // namespace trick
