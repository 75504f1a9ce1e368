#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "core/io/tensor_file.h"

namespace {

// A temporary file, removed with its descriptor.
struct TempFile {
  std::string path;
  int fd = -1;
  TempFile() {
    char name[] = "/tmp/pirl-tensor-file-XXXXXX";
    fd = ::mkstemp(name);
    path = name;
  }
  ~TempFile() {
    ::close(fd);
    std::remove(path.c_str());
  }
};

TEST(TensorFile, TensorsOfEveryLayoutAndDtypeRoundTripAtAnOffset) {
  TempFile file;
  ASSERT_GE(file.fd, 0);
  const at::Tensor a = at::arange(12, at::kFloat).reshape({3, 4}).t();  // not contiguous
  const at::Tensor b = at::randn({2, 3, 4, 5}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor c = at::tensor({int64_t{-7}, int64_t{1} << 40});
  const at::Tensor empty = at::empty({0, 3}, at::kDouble);
  const at::Tensor d = at::tensor({uint8_t{255}, uint8_t{0}, uint8_t{9}});
  pirl::io::writeTensors(file.fd, file.path, 16, {a, b, c, empty, d});

  // The bytes of each, dense and in order, from the offset.
  const int64_t aAt = 16, bAt = aAt + 48, cAt = bAt + 480, dAt = cAt + 16;
  const auto back = pirl::io::readTensors(file.fd, file.path,
                                          {{"a", aAt, at::kFloat, {4, 3}},
                                           {"b", bAt, at::kFloat, {2, 3, 4, 5}},
                                           {"c", cAt, at::kLong, {2}},
                                           {"empty", dAt, at::kDouble, {0, 3}},
                                           {"d", dAt, at::kByte, {3}}});
  ASSERT_EQ(back.size(), 5u);
  EXPECT_TRUE(at::equal(back[0], a));
  EXPECT_TRUE(back[0].is_contiguous());
  EXPECT_TRUE(at::equal(back[1], b));
  EXPECT_TRUE(at::equal(back[2], c));
  EXPECT_EQ(back[3].sizes(), empty.sizes());
  EXPECT_TRUE(at::equal(back[4], d));
  EXPECT_EQ(::lseek(file.fd, 0, SEEK_END), dAt + 3);
}

// Offsets beyond what one JavaScript buffer holds (4 GiB), and a span of more than one read's worth
// (1 GiB per call): a sparse file, marked around 2^32, read into one tensor of 1 GiB + 3 bytes.
TEST(TensorFile, ReadsBeyondFourGiBAndInSeveralCalls) {
  TempFile file;
  ASSERT_GE(file.fd, 0);
  const int64_t start = (int64_t{1} << 32) - (int64_t{1} << 29), n = (int64_t{1} << 30) + 3;
  ASSERT_EQ(::ftruncate(file.fd, start + n + 7), 0);
  const std::vector<int64_t> marks = {start, start + (int64_t{1} << 29) - 1, int64_t{1} << 32, start + (int64_t{1} << 30),
                                      start + n - 1};
  for (size_t i = 0; i < marks.size(); ++i) {
    const auto value = static_cast<uint8_t>(i + 1);
    ASSERT_EQ(::pwrite(file.fd, &value, 1, marks[i]), 1);
  }
  const auto back = pirl::io::readTensors(file.fd, file.path, {{"big", start, at::kByte, {n}}});
  const at::Tensor& big = back.at(0);
  ASSERT_EQ(big.numel(), n);
  const auto* bytes = big.data_ptr<uint8_t>();
  for (size_t i = 0; i < marks.size(); ++i) EXPECT_EQ(bytes[marks[i] - start], i + 1) << "at byte " << marks[i];
  int64_t nonzero = 0;
  for (int64_t i = 0; i < n; ++i) nonzero += bytes[i] != 0;
  EXPECT_EQ(nonzero, static_cast<int64_t>(marks.size()));  // nothing else but zeros
}

// Writes past 4 GiB of a file, and a tensor of more than one write's worth (1 GiB per call).
TEST(TensorFile, WritesBeyondFourGiBAndInSeveralCalls) {
  TempFile file;
  ASSERT_GE(file.fd, 0);
  const int64_t far = (int64_t{1} << 32) + 5;
  pirl::io::writeTensors(file.fd, file.path, far, {at::tensor({1.5f, -2.0f})});
  const auto back = pirl::io::readTensors(file.fd, file.path, {{"far", far, at::kFloat, {2}}});
  EXPECT_TRUE(at::equal(back[0], at::tensor({1.5f, -2.0f})));

  const int64_t n = (int64_t{1} << 30) + 3;
  at::Tensor large = at::zeros({n}, at::kByte);
  large[0] = 1, large[(int64_t{1} << 30) - 1] = 2, large[int64_t{1} << 30] = 3, large[n - 1] = 4;
  pirl::io::writeTensors(file.fd, file.path, 0, {large});
  for (const auto& [at, value] : std::vector<std::pair<int64_t, uint8_t>>{
           {0, 1}, {(int64_t{1} << 30) - 1, 2}, {int64_t{1} << 30, 3}, {n - 1, 4}, {n - 2, 0}}) {
    uint8_t got = 99;
    ASSERT_EQ(::pread(file.fd, &got, 1, at), 1);
    EXPECT_EQ(got, value) << "at byte " << at;
  }
}

TEST(TensorFile, AFileThatEndsInsideATensorIsAnErrorNamingItAndTheFile) {
  TempFile file;
  ASSERT_GE(file.fd, 0);
  pirl::io::writeTensors(file.fd, file.path, 0, {at::ones({3})});
  try {
    pirl::io::readTensors(file.fd, file.path, {{"tensor 'w'", 4, at::kFloat, {3}}});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), file.path + ": ended at byte 12, inside tensor 'w' (it shrank while being read)");
  }
  try {
    pirl::io::readTensors(-1, "gone.safetensors", {{"tensor 'w'", 0, at::kFloat, {3}}});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "gone.safetensors: cannot read at byte 0: Bad file descriptor");
  }
}

}  // namespace
