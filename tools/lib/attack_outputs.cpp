#include "tools/lib/attack_outputs.h"

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <exception>
#include <future>
#include <iomanip>
#include <sstream>

#include "kernels/pointwise.h"
#include "models/labels.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/image.h"
#include "tools/lib/render.h"
#include "tools/lib/report.h"

namespace trick {

std::string class_label(const std::vector<std::string>& names, int index) {
  if (index < 0 || index >= static_cast<int>(names.size())) return cat("class ", index);
  return short_label(names[index]);
}

namespace {

nlohmann::json top5_json(const std::vector<float>& probs, const std::vector<std::string>& names) {
  std::vector<int> idx(probs.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
  const size_t k = std::min<size_t>(5, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); });
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < k; ++i)
    out.push_back({{"index", idx[i]}, {"label", names[idx[i]]}, {"prob", probs[idx[i]]}});
  return out;
}

std::vector<ReportClass> top5_report(const std::vector<float>& probs, const std::vector<std::string>& names) {
  std::vector<ReportClass> out;
  for (const auto& j : top5_json(probs, names))
    out.push_back({j["index"].get<int>(), class_label(names, j["index"].get<int>()), j["prob"].get<float>()});
  return out;
}

std::string csv_quote(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string trace_csv(const AttackRecord& r) {
  const auto& names = *r.class_names;
  std::ostringstream os;
  os << std::setprecision(8);
  const bool cw = r.settings.method == AttackMethod::Cw;  // its constant per round, as the last column
  os << "step,run,refine,loss,cross_entropy," << (r.settings.targeted ? "target_prob" : "true_class_prob")
     << ",top1,top1_label,top1_prob,top5,linf_255,l2_255,l0,grad_norm,seconds"
     << (cw ? ",cw_c\n" : "\n");
  for (const StepRecord& s : r.result->trace) {
    std::string top5;
    for (const ClassProb& c : s.top5) top5 += cat(top5.empty() ? "" : " ", c.index, ":", c.prob);
    os << s.step << ',' << s.round << ',' << (s.refine ? 1 : 0) << ',' << s.loss << ',' << s.cross_entropy << ','
       << s.label_prob << ',' << s.top1.index << ',' << csv_quote(class_label(names, s.top1.index)) << ','
       << s.top1.prob << ',' << top5 << ',' << s.linf << ',' << s.l2 << ',' << s.l0 << ',' << s.grad_norm << ','
       << s.seconds;
    if (cw) {
      os << ',';
      if (!s.refine) os << s.cw_c;
    }
    os << '\n';
  }
  return os.str();
}

nlohmann::json trace_json(const AttackRecord& r) {
  const auto& names = *r.class_names;
  nlohmann::json out = nlohmann::json::array();
  for (const StepRecord& s : r.result->trace) {
    nlohmann::json top5 = nlohmann::json::array();
    for (const ClassProb& c : s.top5) top5.push_back({{"index", c.index}, {"label", names[c.index]}, {"prob", c.prob}});
    out.push_back({{"step", s.step},
                   {"run", s.round},
                   {"refine", s.refine},
                   {"loss", s.loss},
                   {"cross_entropy", s.cross_entropy},
                   {r.settings.targeted ? "target_prob" : "true_class_prob", s.label_prob},
                   {"top1", {{"index", s.top1.index}, {"label", names[s.top1.index]}, {"prob", s.top1.prob}}},
                   {"top5", top5},
                   {"linf_255", s.linf},
                   {"l2_255", s.l2},
                   {"l0", s.l0},
                   {"grad_norm", s.grad_norm},
                   {"seconds", s.seconds}});
    if (r.settings.method == AttackMethod::Cw && !s.refine) out.back()["cw_c"] = s.cw_c;
  }
  return out;
}

}  // namespace

nlohmann::json settings_json(const AttackSettings& s) {
  nlohmann::json settings = {{"eps_255", s.eps * 255.f},
                             {"norm", ball_name(s.ball)},
                             {"step_255", s.step * 255.f},
                             {"steps", s.steps},
                             {"confidence", s.confidence},
                             {"random_start", s.random_start},
                             {"restarts", s.restarts},
                             {"refine_steps", s.refine_steps},
                             {"seed", s.seed},
                             {"input_size", s.raw_input ? "raw" : "model"}};
  if (s.method == AttackMethod::MiFgsm) settings["momentum"] = s.momentum;
  if (s.method == AttackMethod::Adam) settings["betas"] = {s.beta1, s.beta2};
  if (s.method == AttackMethod::Cw) {  // no budget and no step: it minimises L2 with Adam (cw_lr)
    settings.update({{"kappa", s.kappa}, {"cw_c", s.cw_c}, {"cw_search", s.cw_search}, {"cw_lr", s.cw_lr}});
    settings["eps_255"] = nullptr, settings["step_255"] = nullptr, settings["norm"] = "l2";
  }
  return settings;
}

nlohmann::json summary_json(const AttackRecord& r) {
  const ItemResult& res = *r.result;
  const AttackSettings& s = r.settings;
  const auto& names = *r.class_names;
  const nlohmann::json settings = settings_json(s);
  // What "success" means, and the top-1 criterion most papers count, for comparing with them.
  const int top1 =
      static_cast<int>(std::max_element(res.final_probs.begin(), res.final_probs.end()) - res.final_probs.begin());
  const std::string rule = !s.targeted                        ? std::string("top-1 is not the true class")
                           : s.method == AttackMethod::Cw ? cat("top-1 is the target by a logit margin >= ", s.kappa)
                                                          : cat("target probability >= ", s.confidence, " and top-1");
  nlohmann::json j = {
      {"image", r.image_path},
      {"image_size", {r.original.dim(0), r.original.dim(1)}},
      {"model", r.model_name},
      {"weights", r.weights},
      {"weights_sha256", r.weights_sha256},
      {"device", r.device},
      {"backend", r.backend},
      {"method", attack_method_name(s.method)},
      {"targeted", s.targeted},
      {s.targeted ? "target" : "true_class",
       r.chosen_by.empty()
           ? nlohmann::json{{"index", r.label}, {"label", names[r.label]}}
           : nlohmann::json{{"index", r.label}, {"label", names[r.label]}, {"chosen_by", r.chosen_by}}},
      {"settings", settings},
      {"success",
       {{"float", res.success_float},
        {"8bit", res.success_8bit},
        {"refined", res.refined},
        {"rule", rule},
        {"top1_8bit", s.targeted ? top1 == r.label : top1 != r.label}}},
      {"steps", res.steps},
      {"best_run", res.best_run},
      {"norms_255", {{"linf", res.linf}, {"l2", res.l2}, {"l0", res.l0}}},
      {"original_top5", top5_json(res.original_probs, names)},
      {"final_top5", top5_json(res.final_probs, names)},
      {"final_label_prob", res.final_probs[r.label]},
      {"wall_seconds", r.wall_seconds},
      {"outputs",
       {{"adversarial", "adversarial.png"},
        {"original", "original.png"},
        {"perturbation", "perturbation.png"},
        {"trace", {"trace.csv", "trace.json"}},
        {"animation", r.animation ? nlohmann::json("animation.gif") : nlohmann::json(nullptr)},
        {"report", "index.html"}}},
      {"trick_version", "0.1.0"},
      {"command", r.command_line}};
  if (!r.manifest_row.is_null()) j["manifest_row"] = r.manifest_row;
  return j;
}

float write_attack_outputs(const AttackRecord& r) {
  const ItemResult& res = *r.result;
  const auto& names = *r.class_names;
  const std::string d = r.dir + "/";
  // The three full-size PNGs are encoded at once, two on their own threads: for a
  // 12-megapixel photo, deflate is most of the time spent writing outputs.
  const Tensor adversarial = res.adversarial.to(Device::cpu());
  auto original_png = std::async(std::launch::async, [&] { save_png(d + "original.png", r.original); });
  auto adversarial_png = std::async(std::launch::async, [&] { save_png(d + "adversarial.png", adversarial); });
  float scale = 0.f;
  std::exception_ptr failed;
  try {
    Tensor delta = Tensor::empty(r.original.shape());
    binary(BinaryOp::Sub, adversarial, r.original.contiguous(), delta);
    save_rgb8_png(d + "perturbation.png", render_perturbation(delta, &scale));
  } catch (...) {
    failed = std::current_exception();
  }
  for (auto* f : {&original_png, &adversarial_png}) try {
      f->get();
    } catch (...) {
      if (!failed) failed = std::current_exception();
    }
  if (failed) std::rethrow_exception(failed);
  atomic_write(d + "trace.csv", trace_csv(r));
  atomic_write(d + "trace.json", trace_json(r).dump(1) + "\n");
  // An earlier run's animation in the same folder would sit beside this run's outputs as if
  // it were this one's (index.html and summary.json name none).
  if (!r.animation) std::remove((d + "animation.gif").c_str());

  ReportInfo info;
  info.input_name = r.image_path;
  info.image_height = static_cast<int>(r.original.dim(0));
  info.image_width = static_cast<int>(r.original.dim(1));
  info.model = r.model_name;
  info.weights_hash = r.weights_sha256;
  info.method = attack_method_name(r.settings.method);
  const AttackSettings& s = r.settings;
  info.settings = {{"mode", s.targeted ? "targeted" : "untargeted"},
                   {"eps", s.method == AttackMethod::Cw ? std::string("none (C&W minimises L2)")
                                                         : cat(s.eps * 255.f, "/255 (", ball_name(s.ball), ")")},
                   {"step", cat(s.step * 255.f, "/255")},
                   {"steps", cat(s.steps)},
                   {"confidence", cat(s.confidence)},
                   {"random start", s.random_start ? "yes" : "no"},
                   {"restarts", cat(s.restarts)},
                   {"seed", cat(s.seed)},
                   {"input size", s.raw_input ? "raw" : "model transform"}};
  info.target = {r.label, class_label(names, r.label), res.final_probs[r.label]};
  info.success = res.success_float;
  info.success_8bit = res.success_8bit;
  info.steps = res.steps;
  info.max_steps = s.steps;
  info.linf_255 = res.linf;
  info.l2_255 = res.l2;
  info.wall_seconds = r.wall_seconds;
  info.device = r.device;
  info.top5_original = top5_report(res.original_probs, names);
  info.top5_final = top5_report(res.final_probs, names);
  for (const StepRecord& st : res.trace) {
    info.target_prob_history.push_back(st.label_prob);
    info.loss_history.push_back(static_cast<float>(st.loss));
  }
  info.perturbation_scale_255 = scale;
  if (!r.animation) info.animation = "";
  info.generated_by = "trick 0.1.0: " + r.command_line;
  write_report(d + "index.html", info);
  // Last: a folder with summary.json is complete (manifest runs skip such rows).
  atomic_write(d + "summary.json", summary_json(r).dump(2) + "\n");
  return scale;
}

}  // namespace trick
