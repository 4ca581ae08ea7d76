# Attribution worker, CPU (TorchSharp-cpu). Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t attribution-worker .
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/Worker/Worker.csproj -c Release -o /app -p:TorchBackend=cpu

FROM mcr.microsoft.com/dotnet/runtime:10.0
# tcmalloc: the worker re-executes itself with it preloaded (src/Engine/NativeAllocator.cs); measured on bert-base,
# DeepLift ~2x faster than glibc malloc at the same peak memory.
RUN apt-get update && apt-get install -y --no-install-recommends libtcmalloc-minimal4 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app .
# Models are mounted read-only at /models (Models__<id>__Path=/models/<id>); the broker comes from RabbitMq__* settings.
ENV DOTNET_gcServer=0 \
    Worker__Transport=RabbitMq \
    Telemetry__PrometheusPort=9464 \
    Telemetry__PrometheusHost=auto \
    Worker__HealthPort=8080 \
    Worker__HttpListen=any
# 8080: /health/live, /health/ready, the job API (/jobs, /openapi/v1.json); 9464: /metrics (both served by Kestrel).
EXPOSE 8080 9464
USER $APP_UID
ENTRYPOINT ["dotnet", "AttributionFleet.Worker.dll"]
