// How the pictures and the report write numbers, so a frame and index.html agree
// ("93.1%", "8/255", tick labels with as many decimals as the tick step needs).
#pragma once
#include <string>

namespace trick {

// printf-style with one double ("%.1f"); the C numeric locale (the program never sets another).
std::string format_number(const char* printf_format, double v);

// A probability as a percentage: "93.1%", small ones with two significant digits ("0.0023%").
std::string format_percent(float p);

// A value in 8-bit levels: "8" when whole, "2.5" / "0.37" otherwise.
std::string format_levels(double v);

// An axis tick: as many decimals as `step` needs, "0" never "-0", scientific when huge or tiny.
std::string format_tick(double v, double step);

}  // namespace trick
