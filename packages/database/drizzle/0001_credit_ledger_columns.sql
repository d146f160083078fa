ALTER TABLE "CreditTransaction" ADD COLUMN "balance_after" integer;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "idempotency_key" text;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD COLUMN "refund_of" uuid;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD CONSTRAINT "CreditTransaction_refund_of_CreditTransaction_id_fk" FOREIGN KEY ("refund_of") REFERENCES "public"."CreditTransaction"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "credit_tx_user_idempotency_key_idx" ON "CreditTransaction" USING btree ("user_id","idempotency_key") WHERE "CreditTransaction"."idempotency_key" is not null;--> statement-breakpoint
CREATE INDEX "credit_tx_refund_of_idx" ON "CreditTransaction" USING btree ("refund_of") WHERE "CreditTransaction"."refund_of" is not null;--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD CONSTRAINT "credit_tx_balance_after_non_negative" CHECK ("CreditTransaction"."balance_after" >= 0);--> statement-breakpoint
ALTER TABLE "CreditTransaction" ADD CONSTRAINT "credit_tx_refund_of_only_on_refunds" CHECK ("CreditTransaction"."refund_of" is null or "CreditTransaction"."operation" = 'refund');