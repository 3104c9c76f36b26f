// Deliberately broken kernels (and their fixed versions) that prove the emulation's checkers work.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace mmkernels::emulation {

// Names of the self-test kernels.
std::vector<std::string> selftest_names();
// Runs one (the broken version, or the fixed one) in the emulation and returns the checkers' report:
// empty when the run was clean. "global_oob" is caught only by AddressSanitizer (a build with
// MMKERNELS_EMULATION_SANITIZE=address), which then aborts the process.
std::string run_selftest(const std::string& name, bool fixed);

// The sm_90a ones (selftest_sm90.cpp): false when `name` is not one of them.
std::vector<std::string> sm90_selftest_names();
bool run_sm90_selftest(const std::string& name, bool fixed, std::string* report);

// The kernels the emulation ran since the last call (dev::emu::take_launch_log): name and grid (x, y, z).
std::vector<std::pair<std::string, std::tuple<uint32_t, uint32_t, uint32_t>>> launch_log();

}  // namespace mmkernels::emulation
