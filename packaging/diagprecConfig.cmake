# CMake package for diagprec, installed by packaging/install.sh (relocatable):
#   find_package(diagprec 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE diagprec::diagprec)          # shared library
#   target_link_libraries(app PRIVATE diagprec::diagprec_static)   # static library
get_filename_component(_diagprec_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

include(CMakeFindDependencyMacro)
find_dependency(Threads)

if(NOT TARGET diagprec::diagprec)
  add_library(diagprec::diagprec SHARED IMPORTED)
  set_target_properties(diagprec::diagprec PROPERTIES
    IMPORTED_LOCATION "${_diagprec_prefix}/lib/@REAL@"
    IMPORTED_SONAME "@SONAME@"
    INTERFACE_INCLUDE_DIRECTORIES "${_diagprec_prefix}/include")
endif()

if(NOT TARGET diagprec::diagprec_static)
  add_library(diagprec::diagprec_static STATIC IMPORTED)
  set_target_properties(diagprec::diagprec_static PROPERTIES
    IMPORTED_LOCATION "${_diagprec_prefix}/lib/libdiagprec.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_diagprec_prefix}/include"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
endif()

unset(_diagprec_prefix)
