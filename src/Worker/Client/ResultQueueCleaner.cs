using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace AttributionFleet.Worker.Client;

/// <summary>Deletes a collected job's result queue (and its exchange) on RabbitMQ; nothing to do in memory.</summary>
public sealed class ResultQueueCleaner(IOptions<WorkerOptions> worker, IOptions<RabbitMqOptions> rabbit, ILogger<ResultQueueCleaner> log)
{
    public async Task Delete(string queue)
    {
        if (!worker.Value.UsesRabbitMq) return;
        try
        {
            var r = rabbit.Value.Resolved();
            var factory = new ConnectionFactory
            {
                HostName = r.Host,
                Port = r.Port,
                VirtualHost = r.VirtualHost,
                UserName = r.Username,
                Password = r.Password,
                Ssl = new SslOption { Enabled = r.UseTls, ServerName = r.TlsServerName ?? r.Host },
            };
            await using var connection = await factory.CreateConnectionAsync("fleet-result-cleanup");
            await using var channel = await connection.CreateChannelAsync();
            await channel.QueueDeleteAsync(queue, ifUnused: false, ifEmpty: false);
            await channel.ExchangeDeleteAsync(queue, ifUnused: false);
        }
        catch (Exception e)
        {
            log.LogWarning("Could not delete result queue {Queue}: {Message}", queue, e.Message);
        }
    }
}
