using System.Security.Cryptography;
using System.Text.Json;
using AttributionFleet.Contracts.V1;

namespace AttributionFleet.Worker.Store;

/// <summary>SHA-256 of what a job asks (model, texts, options, thresholds, batch size; not when it was sent): a resubmission of
/// the same job has the same fingerprint, another job under a reused id does not.</summary>
public static class JobFingerprint
{
    public static string Of(SubmitAttributionJob job)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(new
        {
            job.ModelId,
            job.Texts,
            job.Options,
            job.DeltaThreshold,
            job.RelativeDeltaThreshold,
            job.TextsPerBatch,
        }, SqlJobStore.Json);
        return Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();
    }
}
