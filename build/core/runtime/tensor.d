build/core/runtime/tensor.o: core/runtime/tensor.c core/runtime/tensor.h \
 core/runtime/dtype.h
core/runtime/tensor.h:
core/runtime/dtype.h:
