# provtel serve, built from this repository (docker compose builds it with the repository root
# as context: see docker-compose.yaml).
FROM python:3.11-slim
WORKDIR /src
COPY semconv semconv
COPY exporter exporter
RUN pip install --no-cache-dir ./semconv ./exporter
VOLUME ["/prov"]
EXPOSE 4317 4318
ENTRYPOINT ["provtel"]
CMD ["serve", "--host", "0.0.0.0", "--grpc-port", "4317", "--http-port", "4318", "--output", "/prov"]
