# The pure scheduling core of continuous replication (schedule.h).
add_library(hc_replication_schedule STATIC ${CMAKE_CURRENT_LIST_DIR}/schedule.cc)
target_link_libraries(hc_replication_schedule PUBLIC hc_common)
