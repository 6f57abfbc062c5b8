// sha256_file() against `sha256sum` (tests/data/gguf/tiny.gguf.sha256, written by
// tools/make_quant_vectors.py) and the FIPS 180-2 example vectors.
#include <gtest/gtest.h>

#include <fstream>

#include "common/gguf_writer.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {

TEST(Sha256File, MatchesSha256sumOnAFixture) {
  std::ifstream in(std::string(SINKROUTER_TEST_DATA) + "/gguf/tiny.gguf.sha256");
  std::string want, name;
  in >> want >> name;
  ASSERT_EQ(name, "tiny.gguf");
  ASSERT_EQ(want.size(), 64u);
  EXPECT_EQ(sha256_file(std::string(SINKROUTER_TEST_DATA) + "/gguf/" + name), want);
}

TEST(Sha256File, StandardVectorsAndAMultiChunkFile) {
  // FIPS 180-2 appendix B examples: "" and "abc"; a million 'a' spans the 1 MiB read chunks.
  EXPECT_EQ(sha256_file(testing::write_temp_file("sha_empty", {})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_file(testing::write_temp_file("sha_abc", {'a', 'b', 'c'})),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_file(testing::write_temp_file("sha_million", std::vector<uint8_t>(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256File, MissingFileIsAnError) {
  try {
    sha256_file("/nonexistent/model.gguf");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "/nonexistent/model.gguf: cannot open for hashing: No such file or directory");
  }
}

}  // namespace
}  // namespace sinkrouter
