# The torch wheel ships fmt 12's headers in torch/include, which every torch target puts on the
# search path (-isystem) ahead of the system's /usr/include. A TU that includes torch and fmt would
# then compile against fmt 12 and link the system's libfmt. A folder searched before every -isystem
# one (-I) holds only a link to the system's fmt, so all of coe, spdlog and the torch headers that
# use fmt see one fmt; include/coe/util/error.h asserts which (COE_FMT_VERSION).
# Used by coe's build (cmake/CoeDependencies.cmake) and by an installed coe's coeConfig.cmake, which
# makes the folder in the consuming project's build tree.

# coe_fmt_first(DIR): DIR/fmt becomes a link to the headers of the fmt::fmt found.
function(coe_fmt_first dir)
  get_target_property(include fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
  list(GET include 0 include)
  file(MAKE_DIRECTORY "${dir}")
  file(CREATE_LINK "${include}/fmt" "${dir}/fmt" SYMBOLIC)
endfunction()
