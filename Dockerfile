# kiln-serve in a small image (untested here: no container engine runs on the build machines).
# Build:  docker build -t kiln-serve .     Run: docker run -p 8000:8000 -v $PWD/model.kiln:/models/model.kiln kiln-serve
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        libopenblas-dev libzstd-dev libturbojpeg0-dev libpng-dev libprotobuf-c-dev libhdf5-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN swift build -c release --product kiln-serve --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/kiln-serve" /kiln-serve

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        libopenblas0 libzstd1 libturbojpeg0 libpng16-16 \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 1000 kiln
COPY --from=build /kiln-serve /usr/local/bin/kiln-serve
USER kiln
EXPOSE 8000 8001 8002
ENTRYPOINT ["/usr/local/bin/kiln-serve"]
CMD ["/models/model.kiln", "--name", "model", "--host", "0.0.0.0", "--http-port", "8000", "--grpc-port", "8001", "--metrics-port", "8002"]
