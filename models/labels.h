// Class names and turning what a user types ("pig", "giant panda", "341") into a class index.
#pragma once
#include <string>
#include <vector>

namespace trick {

// The 1000 ImageNet-1k classes in index order, each line the class's WordNet synonyms
// separated by ", " ("hog, pig, grunter, squealer, Sus scrofa"). Compiled into the
// library from data/imagenet_classes.txt.
const std::vector<std::string>& imagenet_classes();
// Fashion-MNIST's 10 classes in label order.
const std::vector<std::string>& fashion_mnist_classes();

// The synonyms of a line, trimmed ("hog", "pig", ...).
std::vector<std::string> class_synonyms(const std::string& line);
// The first synonym: "hog, pig, grunter, ..." -> "hog".
std::string short_label(const std::string& line);

// The index of the class `query` names in `classes` (lines as above):
// - an integer in range is that index;
// - otherwise a synonym equal to the query (case-insensitive, whitespace-trimmed) in
//   exactly one class ("pig" -> 341); in several classes ("panda") it is an error listing
//   them with their indices;
// - otherwise the classes with a synonym containing the query: one is the answer,
//   several an error listing them (at most 10, then "and N more"), none an error.
// Errors are trick::Error with the candidates in the message.
int resolve_class(const std::string& query, const std::vector<std::string>& classes);

// Targets chosen per image from the model's prediction rather than named: "least-likely"
// and "random" (any case, spaces around ignored); None for every other query.
enum class TargetRule { None, LeastLikely, Random };
TargetRule target_rule(const std::string& query);

// Classes with a synonym containing `text` (case-insensitive), in index order; all when
// text is empty. For `trick classes --search`.
std::vector<int> search_classes(const std::string& text, const std::vector<std::string>& classes);

}  // namespace trick
