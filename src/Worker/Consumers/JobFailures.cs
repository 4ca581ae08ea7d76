using AttributionFleet.Contracts.V1;
using MassTransit;

namespace AttributionFleet.Worker.Consumers;

/// <summary>Reports a failed job: to its result queue (where the collector waits) and as a published event.</summary>
public static class JobFailures
{
    public static Uri ResultAddress(Guid jobId) => new($"queue:{FleetAddresses.ResultQueue(jobId)}");

    public static async Task Fail(ConsumeContext context, Guid jobId, JobRejectedException reason, int? batchIndex = null)
    {
        var failed = new AttributionJobFailed
        {
            JobId = jobId,
            ReasonCode = reason.ReasonCode,
            Message = reason.Message,
            Field = reason.Field,
            BatchIndex = batchIndex,
            FailedAt = DateTimeOffset.UtcNow,
        };
        var results = await context.GetSendEndpoint(ResultAddress(jobId));
        await results.Send(failed, context.CancellationToken);
        await context.Publish(failed, context.CancellationToken);
    }
}
