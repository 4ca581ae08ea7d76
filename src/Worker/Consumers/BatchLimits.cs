using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Hosting;

namespace AttributionFleet.Worker.Consumers;

/// <summary>
/// The job limits applied to a batch as it arrives: batches normally come from the planner, which checked the whole job,
/// but one published directly to the batch queue must not bypass them.
/// </summary>
public static class BatchLimits
{
    public static void Check(ExplainAttributionBatch batch, LimitsOptions limits)
    {
        var texts = batch.Texts ?? Array.Empty<JobText>();
        if (texts.Count > limits.MaxTextsPerJob)
            throw new JobRejectedException(FailureReasons.LimitExceeded, "Limits:MaxTextsPerJob",
                $"batch {batch.BatchIndex} has {texts.Count} texts; the limit Limits:MaxTextsPerJob is {limits.MaxTextsPerJob}");
        for (int i = 0; i < texts.Count; i++)
        {
            if (texts[i] is null || string.IsNullOrWhiteSpace(texts[i].Text))
                throw new JobRejectedException(FailureReasons.InvalidRequest, $"texts[{i}]", $"text {i} of batch {batch.BatchIndex} is empty");
            if (texts[i].Text.Length > limits.MaxCharactersPerText)
                throw new JobRejectedException(FailureReasons.LimitExceeded, "Limits:MaxCharactersPerText",
                    $"text {i} (id '{texts[i].Id}') of batch {batch.BatchIndex} has {texts[i].Text.Length} characters; the limit Limits:MaxCharactersPerText is {limits.MaxCharactersPerText}");
        }
    }
}
