using System.Text.Json;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace AttributionFleet.Worker.Http;

/// <summary>
/// The job API: status, progress and results of jobs from the job store, for clients that hold no database credentials.
/// Reads change nothing (any number of readers, any number of times); DELETE removes a job and its results.
/// <list type="bullet">
/// <item><c>GET /jobs/{id}</c>: <see cref="JobStatus"/> (404 when the store does not know the job)</item>
/// <item><c>GET /jobs/{id}/results</c>: every stored result as JSON lines (<c>application/x-ndjson</c>), batch by batch</item>
/// <item><c>GET /jobs/{id}/batches</c>: the stored batch indexes; <c>GET /jobs/{id}/batches/{index}</c>: one batch with its results</item>
/// <item><c>DELETE /jobs/{id}</c>: 204, or 404</item>
/// </list>
/// </summary>
public static class JobApi
{
    public static void Map(IEndpointRouteBuilder app, IServiceProvider services)
    {
        var store = services.GetRequiredService<IJobStore>();
        var jobs = app.MapGroup("/jobs").WithTags("jobs");
        jobs.MapGet("/{jobId:guid}", async (Guid jobId, CancellationToken ct) =>
                await Guard(async () => await store.Get(jobId, ct) is { } status ? Results.Ok(status) : NotFound(jobId)) ?? Results.Empty)
            .WithName("GetJob").WithSummary("A job's state and progress, with its end event once it ended.")
            .Produces<JobStatus>().Produces(StatusCodes.Status404NotFound).Produces(StatusCodes.Status503ServiceUnavailable);
        jobs.MapGet("/{jobId:guid}/results", async (Guid jobId, HttpContext http, CancellationToken ct) =>
            {
                var status = await Guard(async () => await store.Get(jobId, ct) is null ? NotFound(jobId) : null);
                if (status is not null) return status;
                http.Response.ContentType = "application/x-ndjson";
                await foreach (var r in store.Results(jobId, ct))
                {
                    await JsonSerializer.SerializeAsync(http.Response.Body, r, SqlJobStore.Json, ct);
                    await http.Response.Body.WriteAsync("\n"u8.ToArray(), ct);
                }
                return Results.Empty;
            })
            .WithName("GetJobResults").WithSummary("Every stored result of the job as JSON lines (TextAttribution), batch by batch, each text once.")
            .Produces<TextAttribution>(contentType: "application/x-ndjson").Produces(StatusCodes.Status404NotFound);
        jobs.MapGet("/{jobId:guid}/batches", async (Guid jobId, CancellationToken ct) =>
                await Guard(async () => Results.Ok(await store.BatchIndexes(jobId, ct))) ?? Results.Empty)
            .WithName("GetJobBatches").WithSummary("Indexes of the job's stored batches.").Produces<int[]>();
        jobs.MapGet("/{jobId:guid}/batches/{batchIndex:int}", async (Guid jobId, int batchIndex, CancellationToken ct) =>
                await Guard(async () => await store.Batch(jobId, batchIndex, ct) is { } b ? Results.Ok(b) : NotFound(jobId, batchIndex)) ?? Results.Empty)
            .WithName("GetJobBatch").WithSummary("One stored batch with its results.")
            .Produces<AttributionBatchCompleted>().Produces(StatusCodes.Status404NotFound);
        jobs.MapDelete("/{jobId:guid}", async (Guid jobId, CancellationToken ct) =>
                await Guard(async () => await store.Delete(jobId, ct) ? Results.NoContent() : NotFound(jobId)) ?? Results.Empty)
            .WithName("DeleteJob").WithSummary("Deletes the job with its batches and results.")
            .Produces(StatusCodes.Status204NoContent).Produces(StatusCodes.Status404NotFound);
    }

    private static IResult NotFound(Guid jobId, int? batch = null) =>
        Results.Problem(statusCode: 404, title: batch is null ? $"job {jobId} is not in the job store" : $"batch {batch} of job {jobId} is not stored");

    /// <summary>A store that is down is 503 with its one-line reason, not a 500 with a stack trace.</summary>
    private static async Task<IResult?> Guard(Func<Task<IResult?>> call)
    {
        try
        {
            return await call();
        }
        catch (Exception e) when (JobStoreFactory.IsTransient(e))
        {
            return Results.Problem(statusCode: 503, title: e is FleetUnavailableException ? e.Message : $"job store unavailable: {e.Message}");
        }
    }

}
