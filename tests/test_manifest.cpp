// Manifest runs: parsing (quotes, comments, per-row settings, ids), shards, resume state and
// the results table built from what is on disk.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/manifest.h"

#include "tests/test_util.h"

namespace test_manifest {

using namespace trick;
using namespace trick_test;

namespace {
std::string temp_dir() {
  char tmpl[] = "/tmp/trick_manifest_XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  return tmpl;
}
void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST_CASE("manifest: rows, quoting, comments, per-row settings and ids") {
  const std::string d = temp_dir();
  write(d + "/jobs.csv",
        "image,target,method,eps,id\n"
        "# a comment\n"
        "\n"
        "cat.png,pig,,,\n"
        "\"dir/with, comma.jpg\",\"hog, pig\",pgd,4,\n"
        "/abs/x.png,341,descent,,special one\n");
  const std::vector<ManifestRow> rows = read_manifest(d + "/jobs.csv");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].image == d + "/cat.png");
  CHECK(rows[0].target == "pig");
  CHECK(rows[0].settings.empty());
  CHECK(rows[0].id == "00001-cat");
  CHECK(rows[0].line == 4);
  CHECK(rows[1].image == d + "/dir/with, comma.jpg");
  CHECK(rows[1].target == "hog, pig");
  CHECK(rows[1].settings.at("method") == "pgd");
  CHECK(rows[1].settings.at("eps") == "4");
  CHECK(rows[1].id == "00002-with__comma");
  CHECK(rows[2].image == "/abs/x.png");
  CHECK(rows[2].id == "special_one");
  CHECK(rows[2].position == 2);
  // Saved by a spreadsheet as "CSV UTF-8": a byte-order mark, then CRLF line ends.
  write(d + "/bom.csv", "\xEF\xBB\xBFimage,target\r\ncat.png,pig\r\n");
  const std::vector<ManifestRow> bom = read_manifest(d + "/bom.csv");
  REQUIRE(bom.size() == 1);
  CHECK(bom[0].image == d + "/cat.png");
  CHECK(bom[0].target == "pig");
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("manifest: malformed files are refused naming the file and line") {
  const std::string d = temp_dir();
  auto refused = [&](const std::string& text, const std::string& what) {
    write(d + "/m.csv", text);
    CHECK_THROWS_WITH_AS(read_manifest(d + "/m.csv"), doctest::Contains(what.c_str()), Error);
  };
  refused("", "the manifest is empty");
  refused("target\n341\n", "no 'image' column");
  refused("image,colour\na.png,red\n", "m.csv:1: unknown column 'colour'");
  refused("\xEF\xBB\xBFimage,colour\na.png,red\n", "m.csv:1: unknown column 'colour'");  // a BOM, then the header
  refused("image,target\na.png\n", "m.csv:2: 1 fields, the header has 2");
  refused("image,target\n\"a.png,341\n", "m.csv:2: a quoted field is never closed");
  refused("image,target,id\na.png,1,x\nb.png,2,x\n", "m.csv:3: id 'x' is used by an earlier row");
  refused("image,target\n,341\n", "m.csv:2: the image field is empty");
  CHECK_THROWS_WITH_AS(read_manifest(d + "/missing.csv"), doctest::Contains("missing.csv: cannot read"), Error);
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("manifest: shards split the rows without overlap") {
  CHECK_THROWS_AS(parse_shard("3/3"), Error);
  CHECK_THROWS_AS(parse_shard("1"), Error);
  CHECK_THROWS_AS(parse_shard("-1/2"), Error);
  std::vector<int> owner(10, -1);
  for (int i = 0; i < 3; ++i) {
    const Shard s = parse_shard(std::to_string(i) + "/3");
    for (size_t p = 0; p < owner.size(); ++p) {
      ManifestRow r;
      r.position = p;
      if (s.contains(r)) {
        REQUIRE(owner[p] == -1);
        owner[p] = i;
      }
    }
  }
  for (size_t p = 0; p < owner.size(); ++p) CHECK(owner[p] == static_cast<int>(p % 3));  // p % N == i
}

TEST_CASE("manifest: resume state and results.csv come from the files on disk") {
  const std::string d = temp_dir();
  write(d + "/jobs.csv", "image,target\na.png,1\nb.png,2\nc.png,3\n");
  const std::vector<ManifestRow> rows = read_manifest(d + "/jobs.csv");
  const std::string out = d + "/out";
  ensure_directory(out + "/" + rows[0].id);
  write(out + "/" + rows[0].id + "/summary.json",
        R"({"success": {"float": true, "8bit": true}, "steps": 12, "norms_255": {"linf": 4, "l2": 30.5},
            "final_label_prob": 0.995, "wall_seconds": 1.5, "target": {"index": 1, "label": "Trouser, pants"}})");
  write_row_error(out, rows[1], "b.png: not an image");
  CHECK(row_state(out, rows[0]) == RowState::Done);
  CHECK(row_state(out, rows[1]) == RowState::Failed);
  CHECK(row_state(out, rows[2]) == RowState::Pending);
  const ManifestCounts n = write_results(out, rows);
  CHECK(n.done == 1);
  CHECK(n.succeeded == 1);
  CHECK(n.failed == 1);
  CHECK(n.pending == 1);
  const std::string csv = slurp(out + "/results.csv");
  CHECK(csv.find(rows[0].id + "," + d + "/a.png,1,done,1,1,12,4,30.5,0.995,1.5,,1,\"Trouser, pants\"\n") !=
        std::string::npos);
  CHECK(csv.find("failed,,,,,,,,b.png: not an image,,\n") != std::string::npos);
  CHECK(csv.find(rows[2].id + "," + d + "/c.png,3,pending,,,,,,,,,,\n") != std::string::npos);
  // Every line has the header's 14 fields (commas outside quotes: 13).
  CHECK(csv.find("class_index,class_label\n") != std::string::npos);
  size_t line_start = 0;
  for (size_t nl; (nl = csv.find('\n', line_start)) != std::string::npos; line_start = nl + 1) {
    int commas = 0;
    bool quoted = false;
    for (size_t i = line_start; i < nl; ++i) {
      if (csv[i] == '"') quoted = !quoted;
      commas += csv[i] == ',' && !quoted;
    }
    CHECK_MESSAGE(commas == 13, csv.substr(line_start, nl - line_start));
  }
  // The overview page: each row linked, with its verdict, or its error, or pending; the counts.
  const std::string html = batch_index_html(out, rows, "jobs <1>");
  CHECK(contains(html, "<title>jobs &lt;1&gt;</title>"));
  CHECK(contains(html, "3 attacks: 1 done (1 reached the class after rounding to 8-bit pixels), 1 failed, 1 pending"));
  CHECK(contains(html, "<a href=\"" + rows[0].id + "/index.html\">"));
  CHECK(contains(html, "Trouser, pants</td><td class=\"ok\">yes</td><td class=\"n\">12</td>"));
  CHECK(contains(html, "30.5</td><td class=\"n\">99.50%</td>"));
  CHECK(contains(html, "failed: b.png: not an image"));
  CHECK(contains(html, "<td colspan=\"8\">pending</td>"));
  clear_row_error(out, rows[1]);
  CHECK(row_state(out, rows[1]) == RowState::Pending);
  std::system(("rm -rf " + d).c_str());
}

// --- trick attack --manifest, end to end with the embedded model ---------------------------------

namespace {
std::string run_trick(const std::string& args, int* status) {
  return run_capture(std::string(TRICK_BINARY) + " " + args + " 2>&1", status);
}
bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}
int count_of(const std::string& text, const std::string& word) {
  int n = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("manifest: trick attack --manifest runs rows, records failures, resumes and shards") {
  const std::string d = temp_dir();
  const std::string samples = std::string(TRICK_SOURCE_DIR) + "/data/samples/fashion/";
  write(d + "/jobs.csv",
        "image,target,id,eps,steps\n"
        "" + samples + "7_sneaker.png,ankle boot,sneaker,16,\n"  // reaches 99% in ~16 steps
        "" + samples + "8_bag.png,9,bag,1,3\n"                   // cannot: 1/255, 3 steps
        "" + samples + "5_sandal.png,no such class,,,\n"          // fails: unknown class
        "missing.png,bag,,,\n"                                     // fails: no such file
        "" + samples + "1_trouser.png,dress,,zero,\n");            // fails: eps is not a number
  int status = 0;
  std::string out = run_trick("attack --manifest " + d + "/jobs.csv --out " + d + "/out --no-animation --device cpu",
                              &status);
  INFO(out);
  CHECK(status == 3);  // some rows failed or did not reach the target
  CHECK(exists(d + "/out/sneaker/summary.json"));
  CHECK(exists(d + "/out/sneaker/adversarial.png"));
  CHECK(exists(d + "/out/bag/summary.json"));
  CHECK(exists(d + "/out/00003-5_sandal/error.json"));
  CHECK(contains(slurp(d + "/out/00003-5_sandal/error.json"), "no such class"));
  CHECK(exists(d + "/out/00004-missing/error.json"));
  CHECK(contains(slurp(d + "/out/00005-1_trouser/error.json"), "eps"));
  const std::string csv = slurp(d + "/out/results.csv");
  CHECK(contains(csv, "sneaker," + samples + "7_sneaker.png,ankle boot,done,1,1,"));
  CHECK(contains(csv, "bag," + samples + "8_bag.png,9,done,0,0,3,"));
  CHECK(count_of(csv, ",failed,") == 3);
  CHECK(contains(slurp(d + "/out/index.html"), "<a href=\"sneaker/index.html\">"));
  CHECK(contains(slurp(d + "/out/index.html"), "5 attacks: 2 done"));
  {  // summary.json says what success means, and the papers' top-1 criterion beside it
    const nlohmann::json sneaker = nlohmann::json::parse(slurp(d + "/out/sneaker/summary.json"));
    CHECK(sneaker["success"]["8bit"] == true);
    CHECK(sneaker["success"]["top1_8bit"] == true);
    CHECK(sneaker["success"]["rule"] == "target probability >= 0.99 and top-1");
    // and what computed it: the CPU engine and the threads
    const nlohmann::json& backend = sneaker["backend"];
    const std::vector<std::string> engines = {"winograd", "winograd4", "packed", "blas"};
    CHECK(std::count(engines.begin(), engines.end(), backend.value("conv", "")) == 1);
    CHECK(backend.value("threads", 0) >= 1);
    CHECK(!backend.value("kernels", "").empty());
    const nlohmann::json bag = nlohmann::json::parse(slurp(d + "/out/bag/summary.json"));
    CHECK(bag["success"]["8bit"] == false);
    CHECK(bag["success"]["top1_8bit"] == (bag["final_top5"][0]["index"] == 9));
  }

  // Again: the finished rows are skipped, the failed ones tried again (and fail again).
  out = run_trick("attack --manifest " + d + "/jobs.csv --out " + d + "/out --no-animation --device cpu", &status);
  CHECK(status == 3);
  CHECK(contains(out, "now 0 attacked"));
  CHECK(contains(out, "3 failed, 2 already done (1 of them without reaching the target)"));
  // A done row edited since (its eps), or a default on the command line that rows take
  // (--steps), is done again; the others are not.
  const std::string jobs = slurp(d + "/jobs.csv");
  write(d + "/jobs.csv", jobs.substr(0, jobs.find("bag,1,3")) + "bag,2,3" + jobs.substr(jobs.find("bag,1,3") + 7));
  out = run_trick("attack --manifest " + d + "/jobs.csv --out " + d + "/out --no-animation --device cpu", &status);
  CHECK(contains(out, "(row bag) changed since it was done (settings.eps_255 1.0 -> 2.0): attacking it again"));
  CHECK(contains(out, "now 1 attacked"));
  CHECK(contains(out, "1 already done, 1 redone (changed since)"));
  CHECK(nlohmann::json::parse(slurp(d + "/out/bag/summary.json"))["settings"]["eps_255"] == 2.0);
  out = run_trick("attack --manifest " + d + "/jobs.csv --out " + d + "/out --no-animation --device cpu --steps 200",
                  &status);
  CHECK(contains(out, "(row sneaker) changed since it was done (settings.steps 300 -> 200)"));
  CHECK(contains(out, "1 already done (1 of them without reaching the target), 1 redone"));  // bag: its own steps
  // Only the rows that reached their target: exit 0; a done row that did not: exit 3, also
  // when this run attacks nothing.
  write(d + "/ok.csv", "image,target,id,eps\n" + samples + "7_sneaker.png,ankle boot,sneaker,16\n");
  out = run_trick("attack --manifest " + d + "/ok.csv --out " + d + "/out --no-animation --device cpu --steps 200",
                  &status);
  CHECK(contains(out, "now 0 attacked"));
  CHECK(status == 0);
  write(d + "/notok.csv", "image,target,id,eps,steps\n" + samples + "8_bag.png,9,bag,2,3\n");
  out = run_trick("attack --manifest " + d + "/notok.csv --out " + d + "/out --no-animation --device cpu", &status);
  CHECK(contains(out, "now 0 attacked"));
  CHECK(status == 3);

  // Two shards into a fresh folder: each takes its rows, together they cover all of them.
  for (const char* shard : {"0/2", "1/2"}) {
    out = run_trick("attack --manifest " + d + "/jobs.csv --out " + d + "/sh --no-animation --device cpu --shard " +
                        shard,
                    &status);
    CHECK(status == 3);
    if (std::string(shard) == "0/2") {  // rows 0, 2, 4 done or failed; rows 1 and 3 still pending
      const std::string half = slurp(d + "/sh/results.csv");
      CHECK(count_of(half, ",pending,") == 2);
      CHECK(count_of(half, ",done,") + count_of(half, ",failed,") == 3);
    }
  }
  const std::string csv2 = slurp(d + "/sh/results.csv");
  CHECK(count_of(csv2, ",done,") == 2);
  CHECK(count_of(csv2, ",failed,") == 3);
  CHECK(count_of(csv2, ",pending,") == 0);

  // Mistakes in the command itself: one error line, nothing written.
  out = run_trick("attack --manifest " + d + "/jobs.csv --out " + d + "/bad --shard 2/2", &status);
  CHECK(status == 1);
  CHECK(contains(out, "error: --shard must be i/N"));
  out = run_trick("attack --manifest " + d + "/nothere.csv --out " + d + "/bad", &status);
  CHECK(status == 1);
  CHECK(contains(out, "nothere.csv"));
  out = run_trick("attack x.png --manifest " + d + "/jobs.csv --out " + d + "/bad", &status);
  CHECK(status == 1);
  CHECK(contains(out, "takes no image arguments"));
  out = run_trick("attack " + samples + "7_sneaker.png --target bag --shard 0/2 --out " + d + "/bad", &status);
  CHECK(status == 1);
  CHECK(contains(out, "--shard needs --manifest"));
  CHECK(!exists(d + "/bad"));
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("manifest: every per-row setting column reaches its row's attack, and a bad value fails that row only") {
  const std::string d = temp_dir();
  const std::string samples = std::string(TRICK_SOURCE_DIR) + "/data/samples/fashion/";
  write(d + "/jobs.csv",
        "image,target,id,method,norm,eps,step,steps,confidence,restarts,seed,untargeted,true_class\n"
        "" + samples + "7_sneaker.png,ankle boot,a,pgd,l2,200,20,4,0.5,2,17,,\n"
        "" + samples + "8_bag.png,,b,bim,linf,6,1.5,5,0.9,,,true,bag\n"
        "" + samples + "5_sandal.png,,c,fgsm,,8,,,,,,1,\n"
        "" + samples + "1_trouser.png,,d,,,,,,,,,maybe,\n");
  int status = 0;
  const std::string out =
      run_trick("attack --manifest " + d + "/jobs.csv --out " + d + "/out --no-animation --device cpu", &status);
  INFO(out);
  CHECK(status == 3);
  const auto summary = [&](const char* id) { return nlohmann::json::parse(slurp(d + "/out/" + id + "/summary.json")); };
  {  // every column of row a, targeted pgd in the L2 ball with two restarts
    const nlohmann::json a = summary("a"), &st = a["settings"];
    CHECK(a["method"] == "pgd");
    CHECK(a["targeted"] == true);
    CHECK(a["target"]["index"] == 9);
    CHECK(st["norm"] == "l2");
    CHECK(st["eps_255"] == 200.0);
    CHECK(st["step_255"] == 20.0);
    CHECK(st["steps"] == 4);
    CHECK(st["confidence"] == 0.5);
    CHECK(st["restarts"] == 2);
    CHECK(st["seed"] == 17);
    CHECK(st["random_start"] == true);
    CHECK(a["success"]["rule"] == "target probability >= 0.5 and top-1");
    CHECK(a["norms_255"]["l2"].get<double>() <= 200.0 + 1e-3);
  }
  {  // untargeted ("true") away from the given true class, bim in the L-inf ball
    const nlohmann::json b = summary("b"), &st = b["settings"];
    CHECK(b["method"] == "bim");
    CHECK(b["targeted"] == false);
    CHECK(b["true_class"]["index"] == 8);
    CHECK(b["success"]["rule"] == "top-1 is not the true class");
    CHECK(st["eps_255"] == 6.0);
    CHECK(st["step_255"] == 1.5);
    CHECK(st["steps"] == 5);
    CHECK(b["norms_255"]["linf"].get<double>() <= 6.0 + 1e-3);
  }
  {  // untargeted ("1") with no true class: the model's prediction; fgsm takes one step of eps
    const nlohmann::json c = summary("c"), &st = c["settings"];
    CHECK(c["method"] == "fgsm");
    CHECK(c["targeted"] == false);
    CHECK(c["true_class"]["index"] == 5);
    CHECK(st["steps"] == 1);
    CHECK(st["step_255"] == 8.0);
  }
  CHECK(contains(slurp(d + "/out/d/error.json"), "column untargeted: 'maybe' is not true/false/1/0"));
  CHECK(!exists(d + "/out/d/summary.json"));
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("attack: --target least-likely and random are chosen per image from the model's prediction") {
  const std::string d = temp_dir();
  const std::string samples = std::string(TRICK_SOURCE_DIR) + "/data/samples/fashion/";
  const std::string bin = std::string(TRICK_BINARY);
  int status = -1;
  // Every class's probability, as classify prints them; the least likely and the top-1.
  auto probs_of = [&](const std::string& image) {
    const nlohmann::json c =
        nlohmann::json::parse(run_capture(bin + " classify " + image + " --topk 10 --json 2>/dev/null", &status));
    REQUIRE(status == 0);
    std::vector<double> p(10, -1);
    for (const auto& t : c.at("top")) p.at(t.at("index").get<int>()) = t.at("prob").get<double>();
    return p;
  };
  auto summaries = [&](const std::string& args) {
    const std::string out = run_capture(bin + " attack " + args + " --steps 1 --no-animation --refine-steps 0 --json "
                                              "2>/dev/null",
                                        &status);
    CHECK((status == 0 || status == 3));
    std::vector<nlohmann::json> js;
    size_t at = 0;
    for (size_t nl; (nl = out.find('\n', at)) != std::string::npos; at = nl + 1)
      if (nl > at) js.push_back(nlohmann::json::parse(out.substr(at, nl - at)));
    return js;
  };
  const std::string dress = samples + "3_dress.png", trouser = samples + "1_trouser.png";
  const std::vector<double> p = probs_of(dress);
  const int least = static_cast<int>(std::min_element(p.begin(), p.end()) - p.begin());
  const std::vector<nlohmann::json> ll = summaries(dress + " --target least-likely --out " + d + "/ll");
  REQUIRE(ll.size() == 1);
  CHECK(ll[0].at("target").at("index").get<int>() == least);
  CHECK(ll[0].at("target").at("chosen_by") == "least-likely");

  // random: any class but the predicted one, the same for the same --seed.
  const std::vector<nlohmann::json> r1 = summaries(dress + " " + trouser + " --target random --seed 4 --out " + d + "/r1");
  const std::vector<nlohmann::json> r2 = summaries(dress + " " + trouser + " --target random --seed 4 --out " + d + "/r2");
  REQUIRE(r1.size() == 2);
  REQUIRE(r2.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    const std::vector<double> q = probs_of(i == 0 ? dress : trouser);
    const int top = static_cast<int>(std::max_element(q.begin(), q.end()) - q.begin());
    const int t = r1[i].at("target").at("index").get<int>();
    CHECK(t != top);
    CHECK(t == r2[i].at("target").at("index").get<int>());
    CHECK(r1[i].at("target").at("chosen_by") == "random");
  }
  // A named target records no choice.
  const std::vector<nlohmann::json> named = summaries(dress + " --target bag --out " + d + "/named");
  REQUIRE(named.size() == 1);
  CHECK_FALSE(named[0].at("target").contains("chosen_by"));
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("attack: several images get an overview beside their folders (index.html, results.csv)") {
  const std::string d = temp_dir();
  const std::string samples = std::string(TRICK_SOURCE_DIR) + "/data/samples/fashion/";
  const std::string args = " --target bag --steps 2 --no-animation --refine-steps 0 --device cpu --out " + d + "/o";
  int status = -1;
  // One image first: its page is DIR/index.html; the batch's overview replaces it.
  run_trick("attack " + samples + "7_sneaker.png" + args, &status);
  CHECK(status == 3);
  CHECK(contains(slurp(d + "/o/index.html"), "adversarial.png"));
  const std::string out = run_trick("attack " + samples + "3_dress.png " + samples + "1_trouser.png" + args, &status);
  INFO(out);
  CHECK(status == 3);
  CHECK(contains(out, "overview: " + d + "/o/index.html, " + d + "/o/results.csv"));
  const std::string csv = slurp(d + "/o/results.csv");
  CHECK(contains(csv, "00-3_dress-Bag," + samples + "3_dress.png,Bag,done,"));
  CHECK(contains(csv, "01-1_trouser-Bag," + samples + "1_trouser.png,Bag,done,"));
  const std::string html = slurp(d + "/o/index.html");
  CHECK(contains(html, "<title>trick attack: 2 images</title>"));
  CHECK(contains(html, "2 attacks: 2 done"));
  for (const char* id : {"00-3_dress-Bag", "01-1_trouser-Bag"}) {
    CHECK(contains(html, std::string("<a href=\"") + id + "/index.html\">"));
    CHECK(contains(html, std::string("<img src=\"") + id + "/adversarial.png\""));
    CHECK(exists(d + "/o/" + id + "/index.html"));
  }
  // --json: stdout stays one JSON object per image.
  const std::string js = run_capture(std::string(TRICK_BINARY) + " attack " + samples + "3_dress.png " + samples +
                                         "1_trouser.png" + args + " --json 2>/dev/null",
                                     &status);
  CHECK(count_of(js, "\n") == 2);
  CHECK_FALSE(contains(js, "overview"));
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("attack: one image toward several targets, one target per image, and counts that fit neither") {
  const std::string d = temp_dir();
  const std::string samples = std::string(TRICK_SOURCE_DIR) + "/data/samples/fashion/";
  const std::string args = " --steps 2 --no-animation --refine-steps 0 --device cpu --out ";
  int status = -1;
  // One image, three targets (the README's "one image, three targets"): three attacks of it.
  std::string out = run_trick("attack " + samples + "7_sneaker.png --target bag --target 9 --target dress" + args + d +
                                  "/one",
                              &status);
  INFO(out);
  CHECK(status == 3);
  std::string csv = slurp(d + "/one/results.csv");
  CHECK(contains(csv, "00-7_sneaker-Bag," + samples + "7_sneaker.png,Bag,done,"));
  CHECK(contains(csv, "01-7_sneaker-Ankle_boot," + samples + "7_sneaker.png,Ankle boot,done,"));
  CHECK(contains(csv, "02-7_sneaker-Dress," + samples + "7_sneaker.png,Dress,done,"));
  CHECK(nlohmann::json::parse(slurp(d + "/one/01-7_sneaker-Ankle_boot/summary.json"))["target"]["index"] == 9);
  // Two images, two targets: the first target for the first image, the second for the second.
  out = run_trick("attack " + samples + "7_sneaker.png " + samples + "8_bag.png --target bag --target 9" + args + d +
                      "/each",
                  &status);
  CHECK(status == 3);
  csv = slurp(d + "/each/results.csv");
  CHECK(contains(csv, "00-7_sneaker-Bag," + samples + "7_sneaker.png,Bag,done,"));
  CHECK(contains(csv, "01-8_bag-Ankle_boot," + samples + "8_bag.png,Ankle boot,done,"));
  CHECK(count_of(csv, ",done,") == 2);
  // Three images, two targets: one error line, nothing written.
  out = run_trick("attack " + samples + "7_sneaker.png " + samples + "8_bag.png " + samples +
                      "3_dress.png --target bag --target 9" + args + d + "/neither",
                  &status);
  CHECK(status == 1);
  CHECK(contains(out, "error: --target given 2 times for 3 images: give one target for all, one per image, or "
                      "several for one image"));
  CHECK(!exists(d + "/neither"));
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("attack: cw's trace.csv and trace.json carry each round's constant c") {
  const std::string d = temp_dir();
  const std::string image = std::string(TRICK_SOURCE_DIR) + "/data/samples/fashion/3_dress.png";
  int status = -1;
  const std::string out =
      run_capture(std::string(TRICK_BINARY) + " attack " + image + " --target bag --method cw --steps 2 --cw-search 2 " +
                      "--cw-c 0.5 --refine-steps 0 --no-animation --device cpu --out " + d + "/cw 2>&1",
                  &status);
  INFO(out);
  CHECK((status == 0 || status == 3));
  const std::string csv = slurp(d + "/cw/trace.csv");
  REQUIRE(csv.find('\n') != std::string::npos);
  const std::string header = csv.substr(0, csv.find('\n'));
  CHECK(header.size() > 5);
  CHECK(header.substr(header.size() - 5) == ",cw_c");
  const nlohmann::json trace = nlohmann::json::parse(slurp(d + "/cw/trace.json"));
  REQUIRE(trace.size() == 6);  // 2 rounds of steps 0, 1, 2
  for (const auto& t : trace) {
    CAPTURE(t.dump());
    // Round 0 runs with --cw-c; round 1 with c halved (0.25) or, after a failure, times 10 (5).
    if (t.at("run") == 0) CHECK(t.at("cw_c").get<double>() == 0.5);
    if (t.at("run") == 1) CHECK((t.at("cw_c").get<double>() == 0.25 || t.at("cw_c").get<double>() == 5.0));
  }
  // The result's steps are updates within its round (at most --steps), the round is best_run.
  const nlohmann::json sum = nlohmann::json::parse(slurp(d + "/cw/summary.json"));
  const int steps = sum.at("steps").get<int>(), run = sum.at("best_run").get<int>();
  CHECK(steps >= 0);
  CHECK(steps <= 2);
  CHECK(run >= 0);
  CHECK(run <= 1);
  if (!sum.at("success").at("float").get<bool>()) {  // no success: the last round's last image
    CHECK(steps == 2);
    CHECK(run == 1);
  }
  CHECK(contains(out, cat("after ", steps, " steps of run ", run + 1, "/2")));
  // Other methods have no such column.
  run_capture(std::string(TRICK_BINARY) + " attack " + image + " --target bag --steps 1 --no-animation --device cpu " +
                  "--out " + d + "/pgd 2>&1",
              &status);
  const std::string pgd = slurp(d + "/pgd/trace.csv");
  CHECK(pgd.substr(0, pgd.find('\n')).find("cw_c") == std::string::npos);
  std::system(("rm -rf " + d).c_str());
}

TEST_CASE("trick: an unknown command is named, with the list of commands") {
  int status = 0;
  const std::string out = run_capture(std::string(TRICK_BINARY) + " frobnicate 2>&1", &status);
  CHECK(status == 2);
  CHECK(contains(out, "error: unknown command 'frobnicate' (commands: attack, classify"));
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
}

}  // namespace test_manifest
