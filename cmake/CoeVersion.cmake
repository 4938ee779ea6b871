# Run at build time (cmake -P): writes coe_version.h with the source tree's git commit, rewriting it
# only when something changed, so a new commit re-links the tools and nothing else.
execute_process(COMMAND git -C "${COE_SOURCE_DIR}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE COE_GIT_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR COE_GIT_COMMIT STREQUAL "")
  set(COE_GIT_COMMIT "unknown")
endif()
configure_file("${COE_SOURCE_DIR}/cmake/coe_version.h.in" "${COE_VERSION_HEADER}" @ONLY)
